package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

func TestDecodeRequestAcceptsEveryClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want protocol.Request
	}{
		{`{"type":"join","room":"general"}`, protocol.Request{Type: "join", Room: "general"}},
		{`{"type":"join","room":"a.b-c_D9","since":0,"epoch":"k3x9"}`,
			protocol.Request{Type: "join", Room: "a.b-c_D9", HasSince: true, Epoch: "k3x9"}},
		{`{"type":"join","room":"general","since":41,"epoch":""}`,
			protocol.Request{Type: "join", Room: "general", Since: 41, HasSince: true}},
		{`{"type":"leave","room":"general","extra":[1,{"x":null}]}`, protocol.Request{Type: "leave", Room: "general"}},
		{`{"type":"send","room":"general","text":"hi \u00e9 \ud83d\ude00","client_msg_id":"c-1:2.3_x"}`,
			protocol.Request{Type: "send", Room: "general", Text: "hi é 😀", ClientMsgID: "c-1:2.3_x"}},
		{`{"type":"history","room":"general"}`, protocol.Request{Type: "history", Room: "general", Limit: 100}},
		{`{"type":"history","room":"general","before":41,"limit":50}`,
			protocol.Request{Type: "history", Room: "general", Before: 41, HasBefore: true, Limit: 50}},
		{`{"type":"history","room":"general","after":0,"limit":1}`,
			protocol.Request{Type: "history", Room: "general", HasAfter: true, Limit: 1}},
	} {
		got, err := protocol.DecodeRequest([]byte(tc.in), protocol.Limits{})
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestDecodeRequestRejectsWithStableCodes(t *testing.T) {
	long := strings.Repeat("x", 101)
	for _, tc := range []struct {
		in, code, ref string
	}{
		{``, protocol.CodeBadJSON, ""},
		{`{`, protocol.CodeBadJSON, ""},
		{`null`, protocol.CodeUnknownType, ""},
		{`[]`, protocol.CodeBadJSON, ""},
		{`42`, protocol.CodeBadJSON, ""},
		{`{"type":"join","room":"general"} {}`, protocol.CodeBadJSON, ""},
		{`{}`, protocol.CodeUnknownType, ""},
		{`{"type":7}`, protocol.CodeBadRequest, ""},
		{`{"type":"JOIN","room":"general"}`, protocol.CodeUnknownType, ""},
		{`{"type":"` + long + `"}`, protocol.CodeUnknownType, ""},
		{`{"type":"join"}`, protocol.CodeBadRequest, ""},
		{`{"type":"join","room":null}`, protocol.CodeBadRequest, ""},
		{`{"type":"join","room":""}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"-lead"}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"sp ace"}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"caf\u00e9"}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"a{b}"}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"` + strings.Repeat("r", 65) + `"}`, protocol.CodeBadRoom, ""},
		{`{"type":"join","room":"general","since":-1}`, protocol.CodeBadRequest, ""},
		{`{"type":"join","room":"general","since":1e3}`, protocol.CodeBadRequest, ""},
		{`{"type":"join","room":"general","since":99999999999999999999}`, protocol.CodeBadRequest, ""},
		{`{"type":"join","room":"general","epoch":"no spaces"}`, protocol.CodeBadRequest, ""},
		{`{"type":"send","room":"general","text":"hi"}`, protocol.CodeBadRequest, ""},
		{`{"type":"send","room":"general","text":"hi","client_msg_id":""}`, protocol.CodeBadRequest, ""},
		{`{"type":"send","room":"general","text":"hi","client_msg_id":"has space"}`, protocol.CodeBadRequest, ""},
		{`{"type":"send","room":"general","client_msg_id":"c1"}`, protocol.CodeBadRequest, "c1"},
		{`{"type":"send","room":"general","text":"","client_msg_id":"c1"}`, protocol.CodeBadRequest, "c1"},
		{`{"type":"send","room":"general","text":" \n\t","client_msg_id":"c1"}`, protocol.CodeBadRequest, "c1"},
		{`{"type":"send","room":"general","text":7,"client_msg_id":"c1"}`, protocol.CodeBadRequest, "c1"},
		{`{"type":"send","room":"bad room","text":"hi","client_msg_id":"c1"}`, protocol.CodeBadRoom, "c1"},
		{`{"type":"send","room":"general","text":"` + strings.Repeat("é", 2001) + `","client_msg_id":"c1"}`, protocol.CodeTextTooLong, "c1"},
		{`{"type":"history","room":"general","before":0}`, protocol.CodeBadRequest, ""},
		{`{"type":"history","room":"general","after":-5}`, protocol.CodeBadRequest, ""},
		{`{"type":"history","room":"general","before":5,"after":1}`, protocol.CodeBadRequest, ""},
		{`{"type":"history","room":"general","limit":0}`, protocol.CodeBadRequest, ""},
		{`{"type":"history","room":"general","limit":101}`, protocol.CodeBadRequest, ""},
		{`{"type":"history","room":"general","limit":"10"}`, protocol.CodeBadRequest, ""},
	} {
		_, err := protocol.DecodeRequest([]byte(tc.in), protocol.Limits{})
		var e *protocol.Error
		if !errors.As(err, &e) {
			t.Errorf("%.80s: got %v, want error %s", tc.in, err, tc.code)
			continue
		}
		if e.Code != tc.code || e.Ref != tc.ref {
			t.Errorf("%.80s: got %s (ref %q): %s, want %s (ref %q)", tc.in, e.Code, e.Ref, e.Message, tc.code, tc.ref)
		}
		if e.Message == "" {
			t.Errorf("%.80s: error without a message", tc.in)
		}
	}
}

func TestTextLimitIsConfigurableAndCountsBytes(t *testing.T) {
	frame := []byte(`{"type":"send","room":"r","text":"ééé","client_msg_id":"c"}`) // 6 bytes
	if _, err := protocol.DecodeRequest(frame, protocol.Limits{MaxTextBytes: 6}); err != nil {
		t.Errorf("6 bytes with a limit of 6: %v", err)
	}
	if _, err := protocol.DecodeRequest(frame, protocol.Limits{MaxTextBytes: 5}); protocol.ErrorCode(err) != protocol.CodeTextTooLong {
		t.Errorf("6 bytes with a limit of 5: %v", err)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	m := protocol.Message{
		Room: "general", Epoch: "k3x9", Seq: 58, ID: "01jq3n9c4k0f3m6t2b7x5d8e1a",
		User: protocol.User{ID: "g_1", Name: "Ann <b>"}, Text: "line1\nline2 \u2028 </script>",
		TS: time.Date(2026, 11, 28, 19, 20, 1, 123e6, time.UTC), ClientMsgID: "c-17",
	}
	b := protocol.EncodeMessage(m)
	if bytes.ContainsAny(b, "\n\r") {
		t.Fatalf("encoded frame has a raw newline, which would break batching: %s", b)
	}
	var typed struct{ Type string }
	if err := json.Unmarshal(b, &typed); err != nil || typed.Type != "message" {
		t.Fatalf("frame %s: type %q, %v", b, typed.Type, err)
	}
	got, err := protocol.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != m {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
}

func TestDecodeMessageRejectsWhatClientsMustNotSee(t *testing.T) {
	good := `"room":"general","epoch":"k3x9","seq":1,"id":"abc","user":{"id":"u","name":"n"},"text":"hi","ts":"2026-01-01T00:00:00Z"`
	if _, err := protocol.DecodeMessage([]byte(`{"type":"message",` + good + `}`)); err != nil {
		t.Fatalf("good body rejected: %v", err)
	}
	for _, body := range []string{
		`{"type":"typing",` + good + `}`,
		strings.Replace(`{"type":"message",`+good+`}`, `"room":"general"`, `"room":"../x"`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"seq":1`, `"seq":0`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"epoch":"k3x9"`, `"epoch":""`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"id":"abc"`, `"id":"a b"`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"user":{"id":"u","name":"n"}`, `"user":{}`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"text":"hi"`, `"text":""`, 1),
		strings.Replace(`{"type":"message",`+good+`}`, `"text":"hi"`, `"text":"`+strings.Repeat("x", 70000)+`"`, 1),
		`{"type":"message",` + good + `,"client_msg_id":"no spaces allowed"}`,
	} {
		if _, err := protocol.DecodeMessage([]byte(body)); err == nil {
			t.Errorf("accepted %.120s", body)
		}
	}
}

func TestEncodeSplicesType(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		v    any
		want string
	}{
		{protocol.TypeLeft, protocol.Left{Room: "r"}, `{"type":"left","room":"r"}`},
		{protocol.TypeAck, protocol.Ack{ClientMsgID: "c", Room: "r", Seq: 2, ID: "i"}, `{"type":"ack","client_msg_id":"c","room":"r","seq":2,"id":"i"}`},
		{"empty", struct{}{}, `{"type":"empty"}`},
	} {
		if got := string(protocol.Encode(tc.typ, tc.v)); got != tc.want {
			t.Errorf("Encode(%s) = %s, want %s", tc.typ, got, tc.want)
		}
	}
	e := protocol.EncodeError(&protocol.Error{Code: "bad_room", Message: "no", Ref: "c1"}, "")
	if string(e) != `{"type":"error","code":"bad_room","message":"no","ref":"c1"}` {
		t.Errorf("EncodeError = %s", e)
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"alice", "alice", true},
		{"  Ann   Lee \n", "Ann Lee", true},
		{"evil\u202etxt.exe", "eviltxt.exe", true},
		{"zero\u200bwidth", "zerowidth", true},
		{"bell\x07", "bell", true},
		{strings.Repeat("é", 40), strings.Repeat("é", protocol.MaxNameLen), true},
		{"", "", false},
		{" \t\u200b ", "", false},
		{"bad\xffutf8", "", false},
	} {
		got, ok := protocol.CleanName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CleanName(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPeekRoom(t *testing.T) {
	m := protocol.EncodeMessage(protocol.Message{Room: "general", Epoch: "e", Seq: 1, ID: "i", User: protocol.User{ID: "u"}, Text: "x"})
	typing := protocol.Encode(protocol.TypeTyping, protocol.Typing{Room: "team-a", User: protocol.User{ID: "u"}})
	for _, tc := range []struct {
		body string
		room string
		ok   bool
	}{
		{string(m), "general", true},
		{string(typing), "team-a", true},
		{`{"room":"general","type":"message"}`, "", false}, // another shape: decode it
		{`{"type":"message","room":"bad room"}`, "", false},
		{`{"type":"message","room":"` + strings.Repeat("r", 70) + `"}`, "", false},
		{`{"type":"message","room":"unterminated`, "", false},
		{`{"type":"stats"}`, "", false},
	} {
		room, ok := protocol.PeekRoom([]byte(tc.body))
		if room != tc.room || ok != tc.ok {
			t.Errorf("PeekRoom(%.50s) = %q, %v; want %q, %v", tc.body, room, ok, tc.room, tc.ok)
		}
	}
}
