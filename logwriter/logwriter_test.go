package logwriter

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	block  chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLinesArriveWholeAndInOrder(t *testing.T) {
	t.Parallel()
	out := &syncBuffer{}
	w := New(out, Options{FlushInterval: time.Millisecond, FlushSize: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(w, "g=%d i=%d\n", g, i)
			}
		})
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4000 {
		t.Fatalf("%d lines, want 4000", len(lines))
	}
	last := map[string]int{}
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "g=%d i=%d", &g, &i); err != nil {
			t.Fatalf("torn line %q", l)
		}
		key := fmt.Sprint(g)
		if prev, ok := last[key]; ok && i != prev+1 {
			t.Fatalf("goroutine %d: line %d after %d", g, i, prev)
		}
		last[key] = i
	}
	if out.writes >= 4000 {
		t.Errorf("%d writes for 4000 lines: not batched", out.writes)
	}
}

func TestFlushesWithinInterval(t *testing.T) {
	t.Parallel()
	out := &syncBuffer{}
	w := New(out, Options{FlushInterval: 10 * time.Millisecond})
	defer w.Close()
	w.Write([]byte("one line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "one line\n" {
		if time.Now().After(deadline) {
			t.Fatal("a lone line was never written")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSlowOutputDropsAndCounts(t *testing.T) {
	t.Parallel()
	out := &syncBuffer{block: make(chan struct{})}
	w := New(out, Options{FlushInterval: time.Millisecond, FlushSize: 16, MaxBuffer: 100})
	w.Write([]byte("first line is taken by the stuck writer\n"))
	time.Sleep(20 * time.Millisecond) // the writer is now blocked on out
	for range 50 {
		if _, err := w.Write([]byte("0123456789\n")); err != nil {
			t.Fatal(err)
		}
	}
	close(out.block)
	w.Close()
	got := out.String()
	kept := strings.Count(got, "0123456789\n")
	if kept == 0 || kept >= 50 {
		t.Errorf("kept %d of 50 lines with a 100-byte cap, want some dropped", kept)
	}
	if want := fmt.Sprintf("dropped=%d", 50-kept); !strings.Contains(got, want) {
		t.Errorf("output does not report %s:\n%s", want, got)
	}
}

func BenchmarkWrite(b *testing.B) {
	w := New(discard{}, Options{})
	defer w.Close()
	line := []byte(`at=info method=GET path="/items" host=example.com request_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee status=200` + "\n")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(line)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
