// Package bench measures steady against the libraries users pick instead.
package bench
