// Package logwriter batches log lines so that no request waits on a write
// system call: callers append to a buffer under a short lock, and one
// goroutine writes the buffer out every FlushInterval, or sooner once it
// holds FlushSize bytes.
package logwriter

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultFlushSize     = 32 << 10
	DefaultMaxBuffer     = 8 << 20
)

// Options configures a Writer. Zero fields take the defaults above.
type Options struct {
	// FlushInterval bounds how long a line waits before it is written.
	FlushInterval time.Duration
	// FlushSize wakes the writer early once this many bytes wait.
	FlushSize int
	// MaxBuffer caps the bytes waiting when the output is slower than the
	// traffic (a stalled log drain): beyond it lines are dropped, counted,
	// and the count is written once the output drains. Traffic is never
	// held back for logs.
	MaxBuffer int
}

// Writer is an io.Writer for whole lines; each Write must be one or more
// complete lines. It is safe for concurrent use.
type Writer struct {
	out io.Writer
	o   Options

	mu      sync.Mutex
	buf     []byte
	dropped int
	closed  bool

	wake chan struct{}
	done chan struct{}
}

// New starts a Writer on out. Close flushes and stops it.
func New(out io.Writer, o Options) *Writer {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.FlushSize <= 0 {
		o.FlushSize = DefaultFlushSize
	}
	if o.MaxBuffer <= 0 {
		o.MaxBuffer = DefaultMaxBuffer
	}
	w := &Writer{out: out, o: o, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// Write queues p. It never blocks on the output.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		// After Close, write through: late lines (a panic) still appear.
		return w.out.Write(p)
	}
	if len(w.buf)+len(p) > w.o.MaxBuffer {
		w.dropped++
		w.mu.Unlock()
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= w.o.FlushSize
	w.mu.Unlock()
	if full {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *Writer) run() {
	defer close(w.done)
	ticker := time.NewTicker(w.o.FlushInterval)
	defer ticker.Stop()
	var spare []byte
	for {
		select {
		case <-ticker.C:
		case <-w.wake:
		}
		w.mu.Lock()
		batch, dropped, closed := w.buf, w.dropped, w.closed
		// The next batch fills the previous one's memory.
		w.buf, w.dropped = spare[:0], 0
		w.mu.Unlock()
		if dropped > 0 {
			batch = fmt.Appendf(batch, "at=warn msg=\"log lines dropped: output too slow\" dropped=%d\n", dropped)
		}
		if len(batch) > 0 {
			w.out.Write(batch)
		}
		if cap(batch) <= 4*w.o.FlushSize {
			spare = batch
		} else {
			spare = nil // let a burst's buffer go
		}
		if closed {
			return
		}
	}
}

// Close writes what is waiting and stops the writer. Later writes go
// straight to the output.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}
