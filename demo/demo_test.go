package demo

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFollowerLagsLeader(t *testing.T) {
	t.Parallel()
	apps, err := Start(300 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer apps.Close()
	get := func(url string) string {
		resp, err := http.Get(url + "/notes")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	resp, err := http.Post(apps.ReplicaURL+"/notes", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Errorf("write to the read-only app: %d, want 500", resp.StatusCode)
	}
	resp, err = http.Post(apps.PrimaryURL+"/notes", "text/plain", strings.NewReader("first"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(get(apps.PrimaryURL), "- first") {
		t.Error("leader does not see its write")
	}
	if strings.Contains(get(apps.ReplicaURL), "- first") {
		t.Error("follower saw the write before its lag")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(get(apps.ReplicaURL), "- first") {
		if time.Now().After(deadline) {
			t.Fatal("follower never caught up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
