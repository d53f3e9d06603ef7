package replication

import (
	"testing"
	"time"
)

func TestParseLSN(t *testing.T) {
	t.Parallel()
	tests := map[string]LSN{"0/0": 0, "0/16B3748": 0x16B3748, "16/B374D848": 0x16_B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1}
	for text, want := range tests {
		got, err := ParseLSN(text)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %X, %v; want %X", text, got, err, want)
		}
		if back := FormatLSN(got); back != text {
			t.Errorf("FormatLSN(%X) = %q, want %q", got, back, text)
		}
	}
	for _, bad := range []string{"", "16", "16/", "/1", "G/1", "1/2/3", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func TestLagFromHistory(t *testing.T) {
	t.Parallel()
	h := history{keep: 10 * time.Second}
	t0 := time.Unix(1_700_000_000, 0)
	h.record(t0, 100)
	h.record(t0.Add(1*time.Second), 200)
	h.record(t0.Add(2*time.Second), 200) // no progress: not a new sample
	h.record(t0.Add(3*time.Second), 300)
	now := t0.Add(4 * time.Second)

	tests := []struct {
		replayed  LSN
		wantLag   time.Duration
		wantBytes uint64
	}{
		{300, 0, 0},
		{350, 0, 0}, // a follower ahead of the last sample is caught up
		{200, time.Second, 100},
		{150, 3 * time.Second, 150},
		{50, 4 * time.Second, 250},
	}
	for _, tt := range tests {
		lag, bytes := h.lag(now, tt.replayed)
		if lag != tt.wantLag || bytes != tt.wantBytes {
			t.Errorf("replayed %d: lag %s and %d bytes, want %s and %d", tt.replayed, lag, bytes, tt.wantLag, tt.wantBytes)
		}
	}
	if at, ok := h.latest(); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Errorf("latest = %s, %v; want the last read, at 3s", at, ok)
	}
	// Samples older than keep are dropped, the latest kept.
	h.record(t0.Add(20*time.Second), 400)
	if len(h.samples) != 1 || h.samples[0].lsn != 400 {
		t.Errorf("history after 20s = %+v, want only the latest sample", h.samples)
	}
}

func TestRedactHidesPasswords(t *testing.T) {
	t.Parallel()
	got := redact(`cannot parse "postgres://u8a7:s3cr3t-pw@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1"`)
	if got != `cannot parse "postgres://u8a7:xxxxx@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1"` {
		t.Errorf("redacted to %q", got)
	}
}
