//go:build integration

package e2e_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parleychat/parley/internal/browsertest"
)

// showPresence describes a page's presence view for failure messages.
const showPresence = `JSON.stringify({state: document.querySelector('#conn-state')?.dataset.state,
  room: document.querySelector('#room-title')?.textContent,
  count: document.querySelector('#member-count')?.textContent,
  members: [...document.querySelectorAll('#members li[data-user-id]')].map(li => li.textContent),
  typing: document.querySelector('#typing')?.textContent,
  notices: [...document.querySelectorAll('#messages .notice')].map(n => n.textContent),
  unread: [...document.querySelectorAll('#rooms li[data-room]')].map(li => li.dataset.room + ':' + li.querySelector('.unread').textContent),
  lag: document.querySelector('#lag')?.textContent,
  msgs: [...document.querySelectorAll('#messages .msg')].map(m => m.querySelector('.msg-user')?.textContent + ': ' + m.querySelector('.msg-text')?.textContent)})`

// membersAre is a JavaScript predicate: the member list shows exactly names,
// in this order, each with an online dot, the count says so, and only me is
// marked "(you)".
func membersAre(me string, names ...string) string {
	n := strconv.Itoa(len(names))
	js := `((lis) => lis.length === ` + n + ` && document.querySelector('#member-count').textContent === '` + n + `'`
	for i, name := range names {
		li := `lis[` + strconv.Itoa(i) + `]`
		js += ` && ` + li + `.querySelector('.member-name').textContent === ` + jsString(name) +
			` && ` + li + `.dataset.userId !== '' && !!` + li + `.querySelector('.presence-dot')` +
			` && (` + li + `.querySelector('.member-you')?.textContent === '(you)') === ` + strconv.FormatBool(name == me)
	}
	return js + `)([...document.querySelectorAll('#members li[data-user-id]')])`
}

// TestBrowsersSeeEachOtherAndWhoIsTyping: two people in Chromium, on two
// gateways behind nginx, see each other in the room's member list, see one
// notice when the other joins and when they leave the room (or close the
// page), see "bob is typing…"
// while bob types (never their own), and see it go when bob's message
// arrives. A message in a room that is not open counts as unread until the
// room is opened, and the page shows the user's own lag once a message of
// theirs came back.
func TestBrowsersSeeEachOtherAndWhoIsTyping(t *testing.T) {
	// A short grace makes a closed page leave the member lists within the test.
	c := startCluster(t, 2, map[string]string{"PARLEY_PRESENCE_GRACE": "1s"})
	const timeout = 15 * time.Second
	const connected = `document.querySelector('#conn-state').dataset.state === 'connected'`
	open := func(b *browsertest.Browser, room string) {
		b.Do(chromedp.Click(`#rooms li[data-room="` + room + `"] .room-btn`))
		b.WaitJS(timeout, `document.querySelector('#room-title').textContent === '`+room+`'`, showPresence)
	}

	// Both are in general and side; alice looks at general.
	alice := browsertest.Open(t, c.URL()+"/?name=alice&room=side")
	alice.WaitJS(timeout, connected, showPresence)
	open(alice, "general")
	alice.WaitJS(timeout, membersAre("alice", "alice"), showPresence)

	bob := browsertest.Open(t, c.URL()+"/?name=bob&room=side")
	bob.WaitJS(timeout, connected, showPresence)
	open(bob, "general")
	t.Logf("alice is on %s, bob on %s", alice.Eval(`document.querySelector('#gateway').textContent`), bob.Eval(`document.querySelector('#gateway').textContent`))

	// Each sees both, sorted, themself marked.
	alice.WaitJS(timeout, membersAre("alice", "alice", "bob"), showPresence)
	bob.WaitJS(timeout, membersAre("bob", "alice", "bob"), showPresence)
	// Alice is told bob joined, once; bob, who found alice there, is told
	// nothing.
	alice.WaitJS(timeout, `[...document.querySelectorAll('#messages .notice')].map(n => n.textContent).join('|') === 'bob joined'`, showPresence)
	if got := bob.Eval(`document.querySelectorAll('#messages .notice').length`); got != "0" {
		t.Errorf("bob's timeline has %s notices, want none: %s", got, bob.Eval(showPresence))
	}

	// Bob types: alice sees it, bob does not see himself.
	bob.Do(chromedp.SendKeys("#text", "hel"))
	alice.WaitJS(timeout, `document.querySelector('#typing').textContent === 'bob is typing…'`, showPresence)
	if got := bob.Eval(`document.querySelector('#typing').textContent`); got != "" {
		t.Errorf("bob sees %q in his own typing line", got)
	}
	// His message clears the hint at once, long before it would expire.
	bob.Do(chromedp.SendKeys("#text", "lo alice\n"))
	alice.WaitJS(timeout, hasMessage("bob", "hello alice")+` && document.querySelector('#typing').textContent === ''`, showPresence)

	// Alice's own message comes back: her lag shows.
	alice.Do(chromedp.SendKeys("#text", "hi bob\n"))
	alice.WaitJS(timeout, hasMessage("alice", "hi bob")+` && /^[0-9.]+ (ms|s)$/.test(document.querySelector('#lag').textContent)`, showPresence)
	t.Logf("alice's lag: %s", alice.Eval(`document.querySelector('#lag').textContent`))

	// A message in side, which alice has not open, is unread until she opens it.
	open(bob, "side")
	bob.Do(chromedp.SendKeys("#text", "psst\n"))
	alice.WaitJS(timeout, `(() => { const u = document.querySelector('#rooms li[data-room="side"] .unread'); return !u.hidden && u.textContent === '1'; })()`, showPresence)
	if got := alice.Eval(`document.querySelector('#rooms li[data-room="general"] .unread').hidden`); got != "true" {
		t.Errorf("general, the open room, shows an unread badge")
	}
	open(alice, "side")
	alice.WaitJS(timeout, hasMessage("bob", "psst")+` && document.querySelector('#rooms li[data-room="side"] .unread').hidden`, showPresence)

	// Bob leaves general: alice sees him go, in the list and in one notice.
	open(alice, "general")
	bob.Do(chromedp.Click(`#rooms li[data-room="general"] .room-leave`))
	alice.WaitJS(timeout, membersAre("alice", "alice"), showPresence)
	alice.WaitJS(timeout, `[...document.querySelectorAll('#messages .notice')].map(n => n.textContent).join('|') === 'bob joined|bob left'`, showPresence)

	// Bob closes the page, which Chromium may keep in its back/forward
	// cache: that must not keep him present. He is gone from side too.
	open(alice, "side")
	alice.WaitJS(timeout, membersAre("alice", "alice", "bob"), showPresence)
	bob.Do(chromedp.Navigate("about:blank"))
	alice.WaitJS(timeout, membersAre("alice", "alice"), showPresence)

	for _, b := range []*browsertest.Browser{alice, bob} {
		if p := b.Problems(); len(p) > 0 {
			t.Errorf("page problems: %v", p)
		}
	}
}
