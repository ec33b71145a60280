package steadyredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// The causes of a fall back. The error of a [Change] and of the
// steady.EventStore that reports a fall back wraps one of them and the
// error it stands for (errors.Is matches either), and its text names it:
// "steadyredis: Redis refused the connection: dial tcp ...: connection
// refused".
var (
	// ErrTimeout is Redis not answering within the store's timeout
	// (WithTimeout): a paused or overloaded server, or a connection
	// accepted and never answered.
	ErrTimeout = errors.New("steadyredis: Redis did not answer in time")
	// ErrRefused is the connection refused: nothing listens at the
	// address (Redis is down or restarting).
	ErrRefused = errors.New("steadyredis: Redis refused the connection")
	// ErrConnection is any other failure of the connection: reset,
	// closed, a name that does not resolve, a TLS handshake that failed.
	ErrConnection = errors.New("steadyredis: the connection to Redis failed")
	// ErrScript is Redis refusing the store's script, or its reply not
	// being what the store sent: a settlement the script could not read,
	// an error inside the script, a reply of the wrong shape.
	ErrScript = errors.New("steadyredis: Redis refused the store's script")
	// ErrWrongType is a key of the partition holding another type than
	// the store's (another client, stale state): only that partition
	// falls back.
	ErrWrongType = errors.New("steadyredis: a key of the partition holds another type")
	// ErrRedis is Redis answering with any other error (out of memory,
	// read-only replica, authentication, loading).
	ErrRedis = errors.New("steadyredis: Redis answered with an error")
	// ErrClosed is the store closed (see [Store.Close]): it paces locally.
	ErrClosed = errors.New("steadyredis: store closed")
)

// classify returns the cause of a call's failure: err is what the client
// returned (nil when the store stopped waiting for it), dial the last
// error of a dial made for the call (nil when none failed), expired that
// the store's timeout passed. It returns nil for a call that succeeded.
func classify(err, dial error, expired bool) error {
	if err == nil && !expired {
		return nil
	}
	if errors.Is(err, ErrScript) {
		return err // the store's own reading of a reply
	}
	var re redis.Error
	if err != nil && errors.As(err, &re) && !errors.Is(err, redis.Nil) {
		msg := re.Error()
		switch {
		case strings.HasPrefix(msg, "WRONGTYPE") || strings.HasPrefix(msg, errPartition+"wrongtype"):
			return wrapCause(ErrWrongType, err)
		case strings.HasPrefix(msg, errPartition) || strings.Contains(msg, "@user_script") || strings.HasPrefix(msg, "NOSCRIPT"):
			return wrapCause(ErrScript, err)
		}
		return wrapCause(ErrRedis, err)
	}
	e := err
	if dial != nil {
		e = dial // the connection was never made: that is why
	}
	var ne net.Error
	switch {
	case errors.Is(e, syscall.ECONNREFUSED):
		return wrapCause(ErrRefused, e)
	case e == nil:
		return ErrTimeout
	case errors.Is(e, context.DeadlineExceeded) || errors.Is(e, redis.ErrPoolTimeout) || (errors.As(e, &ne) && ne.Timeout()):
		return wrapCause(ErrTimeout, e)
	case expired && errors.Is(e, context.Canceled):
		return wrapCause(ErrTimeout, e)
	}
	return wrapCause(ErrConnection, e)
}

func wrapCause(cause, err error) error { return fmt.Errorf("%w: %w", cause, err) }

// dialTrace is the hook New adds to the client: it records whether the
// client's last dial failed, and with what error, and passes every dial,
// command and pipeline through unchanged. go-redis dials in a goroutine
// of its own, detached from the call that needs the connection, so that
// a call that outlives a refused dial ends with its context's error
// alone; the trace tells why.
type dialTrace struct {
	mu   sync.Mutex
	last error // the last dial's error; nil after a dial that succeeded; guarded by mu
}

func (t *dialTrace) dialErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

func (t *dialTrace) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		t.mu.Lock()
		t.last = err
		t.mu.Unlock()
		return c, err
	}
}

func (*dialTrace) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (*dialTrace) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
