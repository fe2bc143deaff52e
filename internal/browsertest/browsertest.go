// Package browsertest drives Debian's Chromium, headless, for tests of the
// browser client: one Browser per simulated person, each with its own
// profile (its own localStorage), as two people on two machines would be.
//
// Chromium runs with the networking features that reach for the internet
// turned off; on a machine with a closed network they would only fail
// slowly.
package browsertest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ExecPath is where Debian puts Chromium (scripts/test.sh installs it).
const ExecPath = "/usr/bin/chromium"

// Browser is one headless Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	problems []string // JavaScript exceptions and dialogs, reported by Check
}

// Open starts a Chromium, opens url in it, and stops it when the test ends.
func Open(t testing.TB, url string) *Browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ExecPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1200, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b := &Browser{t: t, ctx: ctx}
	chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.report("exception: " + e.ExceptionDetails.Text + " " + describe(e.ExceptionDetails.Exception))
		case *page.EventJavascriptDialogOpening:
			// A dialog is what an injected alert(1) would open.
			b.report("dialog opened: " + e.Message)
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}()
		}
	})
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Starts the browser; exceptions are reported once the runtime domain is on.
	if _, err := chromedp.Call(sctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("chromium: start: %v", err)
	}
	if err := chromedp.Do(sctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium: open %s: %v", url, err)
	}
	return b
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}

func (b *Browser) report(p string) {
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

// Problems returns the JavaScript exceptions and dialogs seen so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Do runs chromedp steps in the tab, failing the test on error.
func (b *Browser) Do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("chromium: %v", err)
	}
}

// WaitJS waits until the JavaScript expression is truthy in the page,
// re-evaluating it on every DOM change, and fails the test after timeout
// with the value of show (an expression describing the page) in the
// message.
func (b *Browser) WaitJS(timeout time.Duration, expr, show string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void]("!!("+expr+")",
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v\npage: %s\nproblems: %s", expr, err, b.Eval(show), strings.Join(b.Problems(), "; "))
	}
}

// Eval returns the value of a JavaScript expression as text (JSON for
// objects), or the error.
func (b *Browser) Eval(expr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprint(v)
}
