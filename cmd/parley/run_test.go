package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startRun runs run() with env until the test ends and returns the URL it
// listens on. run must return nil when its context ends.
func startRun(t *testing.T, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"parley"}, func(k string) string { return env[k] }, pw, testLog{t})
		pw.CloseWithError(fmt.Errorf("run returned: %v", err))
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15s of its context ending")
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("waiting for run to listen: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	_, url, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
	if !ok {
		t.Fatalf("unexpected first line %q", line)
	}
	waitReady(t, url)
	return url
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not ready within 15s (last: %v)", url, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func dial(t *testing.T, url, name string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := client.Dial(ctx, url, client.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if _, err := c.Join(ctx, "general"); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEmbeddedDefaultChats(t *testing.T) {
	url := startRun(t, map[string]string{"PARLEY_ADDR": "127.0.0.1:0"})

	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<script") {
		t.Fatalf("GET /: %d, %.200s", resp.StatusCode, page)
	}

	alice, bob := dial(t, url, "alice"), dial(t, url, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := alice.Send(ctx, map[string]any{"type": "send", "room": "general", "text": "hello", "client_msg_id": "a-1"}); err != nil {
		t.Fatal(err)
	}
	f, err := bob.NextOf(ctx, protocol.TypeMessage)
	if err != nil || f.Text != "hello" || f.Seq != 1 {
		t.Fatalf("bob got %+v, %v", f, err)
	}
}

func TestRefusesBrokerWithoutSharedStore(t *testing.T) {
	env := map[string]string{"PARLEY_ADDR": "127.0.0.1:0", "PARLEY_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}
	err := run(context.Background(), []string{"parley"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PARLEY_REDIS_URL") {
		t.Fatalf("run with a broker and no Redis: %v", err)
	}
}

func TestRejectsArguments(t *testing.T) {
	if err := run(context.Background(), []string{"parley", "serve"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("run accepted an unknown argument")
	}
}
