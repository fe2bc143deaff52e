package protocol_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/parleychat/parley/internal/protocol"
)

// FuzzDecodeRequest feeds the client frame decoder arbitrary bytes. It must
// never panic, must answer every input with a request or an *Error with a
// known code, and what it accepts must satisfy the validation rules.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"type":"join","room":"general","since":41,"epoch":"k3x9"}`,
		`{"type":"send","room":"general","text":"hi","client_msg_id":"c-1"}`,
		`{"type":"history","room":"general","before":41,"limit":50}`,
		`{"type":"leave","room":"general"}`,
		`{"type":"typing","room":"general"}`,
		`{"type":"latency","rtt_ms":[12.5],"delivery_ms":[3]}`,
		`{"type":"refresh","token":"a.b.c"}`,
		`{"type":"send","room":"general","text":7,"client_msg_id":"c-1"}`,
		`{"type":"join","room":"` + "\xff" + `"}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	codes := map[string]bool{
		protocol.CodeBadJSON: true, protocol.CodeUnknownType: true, protocol.CodeBadRequest: true,
		protocol.CodeBadRoom: true, protocol.CodeTextTooLong: true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := protocol.DecodeRequest(data, protocol.Limits{})
		if err != nil {
			e, ok := err.(*protocol.Error)
			if !ok || !codes[e.Code] {
				t.Fatalf("error %T %v is not a protocol error with a known code", err, err)
			}
			if e.Ref != "" && !protocol.ValidClientMsgID(e.Ref) {
				t.Fatalf("error echoes an invalid ref %q", e.Ref)
			}
			return
		}
		switch req.Type {
		case protocol.TypeLatency, protocol.TypeRefresh:
			if req.Room != "" {
				t.Fatalf("%s names room %q", req.Type, req.Room)
			}
		default:
			if !protocol.ValidRoom(req.Room) {
				t.Fatalf("accepted room %q", req.Room)
			}
		}
		switch req.Type {
		case protocol.TypeSend:
			if !protocol.ValidClientMsgID(req.ClientMsgID) || !utf8.ValidString(req.Text) || len(req.Text) > 4000 {
				t.Fatalf("accepted send %+v", req)
			}
		case protocol.TypeHistory:
			if req.Limit < 1 || req.Limit > 100 || (req.HasBefore && req.HasAfter) {
				t.Fatalf("accepted history %+v", req)
			}
		case protocol.TypeLatency:
			if len(req.RTT) > protocol.MaxLatencySamples || len(req.Delivery) > protocol.MaxLatencySamples {
				t.Fatalf("accepted latency %+v", req)
			}
		case protocol.TypeRefresh:
			if req.Token == "" || len(req.Token) > protocol.MaxTokenBytes {
				t.Fatalf("accepted refresh of %d bytes", len(req.Token))
			}
		case protocol.TypeJoin, protocol.TypeLeave, protocol.TypeTyping:
		default:
			t.Fatalf("accepted type %q", req.Type)
		}
	})
}

// FuzzRoomAndIDs checks the name rules against each other: a valid room or
// client_msg_id survives a JSON round trip and never needs escaping, so it
// is safe in URLs, Redis keys and log lines.
func FuzzRoomAndIDs(f *testing.F) {
	for _, s := range []string{"general", "a.b-c_9", "-x", "", "a b", "é", "a{b}", "x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, valid := range map[string]bool{"room": protocol.ValidRoom(s), "client_msg_id": protocol.ValidClientMsgID(s)} {
			if !valid {
				continue
			}
			b, _ := json.Marshal(s)
			if !bytes.Equal(b, []byte(`"`+s+`"`)) {
				t.Fatalf("valid %s %q needs JSON escaping: %s", name, s, b)
			}
			if len(s) == 0 || len(s) > 64 {
				t.Fatalf("valid %s %q has length %d", name, s, len(s))
			}
		}
		if n, ok := protocol.CleanName(s); ok && (utf8.RuneCountInString(n) > protocol.MaxNameLen || n == "") {
			t.Fatalf("CleanName(%q) = %q", s, n)
		}
	})
}
