package loadgen

import (
	"bytes"
	"encoding/json"
)

// The generator reads only what it measures from the gateway's frames:
// their type, a message's seq and text, an ack's client_msg_id, an error's
// code and ref. It finds them by their keys instead of decoding the whole
// JSON object, which would cost more than the gateway's own work per
// delivery. The gateway writes "type" first (see protocol.Encode); a frame
// that does not look as expected is decoded with encoding/json instead.

// frameKind is the type of a server frame, as far as the generator cares.
type frameKind uint8

const (
	kindOther frameKind = iota
	kindMessage
	kindAck
	kindError
	kindJoined
	kindWelcome
	kindGap
)

// Keys the generator looks for. They are constants so that looking them
// up allocates nothing.
const (
	prefixType    = `{"type":"`
	keySeq        = `"seq":`
	keyText       = `"text":"`
	keyClientID   = `"client_msg_id":"`
	keyCode       = `"code":"`
	keyRef        = `"ref":"`
	textMagic     = "lg "
	typeMessage   = "message"
	typeAck       = "ack"
	typeError     = "error"
	typeJoined    = "joined"
	typeWelcome   = "welcome"
	typeGap       = "gap"
	keyFrom       = `"from":`
	keyTo         = `"to":`
	maxStampField = 20 // digits of an int64
)

// kindOf returns the kind of frame f.
func kindOf(f []byte) frameKind {
	if len(f) < len(prefixType) || string(f[:len(prefixType)]) != prefixType {
		return kindOf(retype(f))
	}
	rest := f[len(prefixType):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return kindOther
	}
	switch string(rest[:end]) {
	case typeMessage:
		return kindMessage
	case typeAck:
		return kindAck
	case typeError:
		return kindError
	case typeJoined:
		return kindJoined
	case typeWelcome:
		return kindWelcome
	case typeGap:
		return kindGap
	}
	return kindOther
}

// retype re-encodes a frame whose "type" is not its first key so that it
// is (the slow path; the gateway never needs it today).
func retype(f []byte) []byte {
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(f, &v) != nil || v.Type == "" {
		return []byte(prefixType + `"}`)
	}
	return []byte(prefixType + v.Type + `"}`)
}

// intAfter returns the integer that follows the first occurrence of key.
func intAfter(f []byte, key string) (int64, bool) {
	i := bytes.Index(f, []byte(key))
	if i < 0 {
		return 0, false
	}
	n, _, ok := parseInt(f[i+len(key):])
	return n, ok
}

// stringAfter returns the JSON string (without escapes: only the
// generator's own ids and the gateway's codes are read) that follows key,
// which ends with the opening quote.
func stringAfter(f []byte, key string) ([]byte, bool) {
	i := bytes.Index(f, []byte(key))
	if i < 0 {
		return nil, false
	}
	s := f[i+len(key):]
	end := bytes.IndexByte(s, '"')
	if end < 0 {
		return nil, false
	}
	return s[:end], true
}

// parseInt reads a non-negative decimal integer at the start of b and
// returns it, the rest of b, and whether there was one.
func parseInt(b []byte) (int64, []byte, bool) {
	var n int64
	i := 0
	for i < len(b) && i < maxStampField && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	return n, b[i:], i > 0
}

// stamp is what the generator writes into every text it sends: the phase
// (ramp step) it was sent in, the publisher, its number, and when it was
// sent (nanoseconds since the run's clock started).
type stamp struct {
	step, pub, k, sent int64
}

// appendText appends a message text carrying st, padded with 'x' to at
// least size bytes: "lg <step> <pub> <k> <sent> xxxx".
func appendText(b []byte, st stamp, size int) []byte {
	start := len(b)
	b = append(b, textMagic...)
	b = appendInt(b, st.step)
	b = append(b, ' ')
	b = appendInt(b, st.pub)
	b = append(b, ' ')
	b = appendInt(b, st.k)
	b = append(b, ' ')
	b = appendInt(b, st.sent)
	if len(b)-start < size {
		b = append(b, ' ')
		for len(b)-start < size {
			b = append(b, 'x')
		}
	}
	return b
}

// parseText reads a stamp from a message text written by appendText.
func parseText(t []byte) (stamp, bool) {
	if len(t) < len(textMagic) || string(t[:len(textMagic)]) != textMagic {
		return stamp{}, false
	}
	t = t[len(textMagic):]
	var st stamp
	var ok bool
	fields := [4]*int64{&st.step, &st.pub, &st.k, &st.sent}
	for i, p := range fields {
		if i > 0 {
			if len(t) == 0 || t[0] != ' ' {
				return stamp{}, false
			}
			t = t[1:]
		}
		if *p, t, ok = parseInt(t); !ok {
			return stamp{}, false
		}
	}
	return st, true
}

// messageFields returns a message frame's seq and the stamp in its text.
func messageFields(f []byte) (seq int64, st stamp, ok bool) {
	seq, ok = intAfter(f, keySeq)
	if !ok {
		return 0, stamp{}, false
	}
	text, ok := stringAfter(f, keyText)
	if !ok {
		return 0, stamp{}, false
	}
	st, ok = parseText(text)
	return seq, st, ok
}

// appendClientMsgID appends the client_msg_id of message k of a step:
// "<step>.<k>", unique per sender as the protocol requires.
func appendClientMsgID(b []byte, step, k int64) []byte {
	b = appendInt(b, step)
	b = append(b, '.')
	return appendInt(b, k)
}

// parseClientMsgID reads an id written by appendClientMsgID.
func parseClientMsgID(id []byte) (step, k int64, ok bool) {
	step, rest, ok := parseInt(id)
	if !ok || len(rest) < 2 || rest[0] != '.' {
		return 0, 0, false
	}
	k, rest, ok = parseInt(rest[1:])
	return step, k, ok && len(rest) == 0
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
