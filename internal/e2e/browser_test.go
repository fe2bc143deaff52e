//go:build integration

package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parleychat/parley/internal/browsertest"
	"github.com/parleychat/parley/internal/cluster"
)

// startCluster runs n gateways behind nginx for the test.
func startCluster(t *testing.T, n int, env map[string]string) *cluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Gateways: n, Race: true, Env: env})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

const showMessages = `JSON.stringify({state: document.querySelector('#conn-state')?.dataset.state,
  msgs: [...document.querySelectorAll('#messages .msg')].map(m => [m.dataset.seq, m.dataset.state, m.querySelector('.msg-user')?.textContent, m.querySelector('.msg-text')?.textContent])})`

// hasMessage is a JavaScript predicate: a sent message by user with text.
func hasMessage(user, text string) string {
	return `[...document.querySelectorAll('#messages .msg')].some(m => m.dataset.state === 'sent' && m.dataset.seq !== ''` +
		` && m.querySelector('.msg-user').textContent === ` + jsString(user) +
		` && m.querySelector('.msg-text').textContent === ` + jsString(text) + `)`
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestTwoBrowsersChatThroughNginx(t *testing.T) {
	c := startCluster(t, 2, nil)
	const timeout = 15 * time.Second
	const connected = `document.querySelector('#conn-state').dataset.state === 'connected' && document.querySelector('#gateway').textContent !== ''`

	alice := browsertest.Open(t, c.URL()+"/?name=alice&room=general")
	alice.WaitJS(timeout, connected, showMessages)
	bob := browsertest.Open(t, c.URL()+"/?name=bob&room=general")
	bob.WaitJS(timeout, connected, showMessages)
	t.Logf("alice is on %s, bob on %s", alice.Eval(`document.querySelector('#gateway').textContent`), bob.Eval(`document.querySelector('#gateway').textContent`))

	alice.Do(chromedp.SendKeys("#text", "hello bob\n"))
	bob.WaitJS(timeout, hasMessage("alice", "hello bob"), showMessages)
	alice.WaitJS(timeout, hasMessage("alice", "hello bob"), showMessages)

	bob.Do(chromedp.SendKeys("#text", "hi alice\n"))
	alice.WaitJS(timeout, hasMessage("bob", "hi alice"), showMessages)
	bob.WaitJS(timeout, hasMessage("bob", "hi alice"), showMessages)

	// User text is text: markup in a message must neither render nor run.
	const xss = `<img src=x onerror=alert(1)>`
	alice.Do(chromedp.SendKeys("#text", xss+"\n"))
	bob.WaitJS(timeout, hasMessage("alice", xss)+` && !document.querySelector('#messages img')`, showMessages)

	// Both show the same messages in the same order.
	order := `[...document.querySelectorAll('#messages .msg')].map(m => m.dataset.seq + ':' + m.querySelector('.msg-text').textContent).join('|')`
	alice.WaitJS(timeout, order+` === `+jsString("1:hello bob|2:hi alice|3:"+xss), showMessages)
	bob.WaitJS(timeout, order+` === `+jsString("1:hello bob|2:hi alice|3:"+xss), showMessages)

	for _, b := range []*browsertest.Browser{alice, bob} {
		if p := b.Problems(); len(p) > 0 {
			t.Errorf("page problems: %v", p)
		}
	}
}
