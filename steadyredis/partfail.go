package steadyredis

import (
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A failure stays where it happens: when Redis answers but refuses one
// partition's keys (another client left a key of the wrong type there, or
// the script found the partition's state unreadable and changed nothing),
// that partition alone paces locally, at this process's share, and tries
// Redis again after the retry interval; the store stays shared for every
// other partition and upstream.

// errPartition is the prefix of the script's own refusals (see
// reserve.lua's check): raised before anything is written.
const errPartition = "STEADY "

// partitionError reports whether err is Redis refusing one partition's
// keys rather than Redis being unreachable or failing as a whole.
func partitionError(err error) bool {
	var re redis.Error
	if err == nil || errors.Is(err, redis.Nil) || !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, errPartition) || strings.HasPrefix(msg, "WRONGTYPE") ||
		strings.Contains(msg, "@user_script")
}

// settled records the outcome of a call for pt: a partition's own failure
// takes pt alone out of the fleet for the retry interval and counts as
// Redis answering; any other error is the store's. It returns the error
// the store should record.
//
// A failure of either kind is also recorded as pt's lapse until its next
// grant tells it (see part.takeLapse), so that a fall back found by a
// settlement alone is reported to the pacer too.
func (s *Store) settled(pt *part, err error, now time.Time) error {
	if err != nil && pt.id.Key == "" {
		// The upstream's breaker alone (no pacing partition): the next
		// grant of any partition tells the lapse.
		s.mu.Lock()
		if s.lapse == nil {
			s.lapse = err
		}
		s.mu.Unlock()
	} else if err != nil {
		pt.mu.Lock()
		if pt.lapse == nil {
			pt.lapse = err
		}
		pt.mu.Unlock()
	}
	if partitionError(err) {
		pt.mu.Lock()
		was := pt.broken
		pt.broken, pt.retryAt, pt.brokenErr = true, now.Add(s.cfg.retry), err
		pt.mu.Unlock()
		if !was {
			s.cfg.logger.Warn("steadyredis: Redis refuses a partition's keys; that partition paces locally at this process's share of the limits", "key", pt.keys[0], "err", err)
			if s.cfg.notify != nil {
				s.cfg.notify(Change{Time: now, Shared: false, Err: err, Key: pt.keys[0]})
			}
		}
		return nil
	}
	if err == nil {
		pt.mu.Lock()
		was := pt.broken
		pt.broken = false
		pt.mu.Unlock()
		if was {
			s.cfg.logger.Info("steadyredis: a partition's keys are usable again; pacing shared with the fleet", "key", pt.keys[0])
			if s.cfg.notify != nil {
				s.cfg.notify(Change{Time: now, Shared: true, Key: pt.keys[0]})
			}
		}
	}
	return err
}

// localOnly reports whether pt paces locally now because Redis refused its
// keys less than the retry interval ago, and with what error.
func (pt *part) localOnly(now time.Time) (bool, error) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.broken && now.Before(pt.retryAt) {
		return true, pt.brokenErr
	}
	return false, nil
}

// takeLapse returns the cause of the failure of a call for pt since its
// last grant, or of a call for no partition since any grant, if any, and
// forgets it.
func (s *Store) takeLapse(pt *part) error {
	pt.mu.Lock()
	err := pt.lapse
	pt.lapse = nil
	pt.mu.Unlock()
	s.mu.Lock()
	if err == nil {
		err = s.lapse
	}
	s.lapse = nil
	s.mu.Unlock()
	return err
}
