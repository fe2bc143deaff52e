// Package faults proves that Parley rides through the faults of production:
// RabbitMQ connections cut, RabbitMQ stopped, a RabbitMQ memory alarm, Redis
// stopped, a gateway killed, and a rolling restart of every gateway, all
// under load, with nothing acknowledged lost (issue 4, docs/reliability.md).
//
// The tests live in files built with the "faults" tag and run with
//
//	go test -race -count=1 -p 1 -tags 'integration faults' ./internal/faults/
//
// serially and after every other test (scripts/test.sh does so), because they
// disturb the machine's RabbitMQ: stop_app and the memory alarm are felt by
// every user of the node.
//
// The package's non-test part is the client those tests drive: a Chatter is
// one user of the protocol that behaves as the browser client does
// (reconnects with full-jitter backoff, resumes with since and epoch,
// retries unanswered sends with the same client_msg_id) and checks, as it
// goes, what a user would notice: a seq that repeats, a seq that skips, a
// resume that is not recovered. A Crowd is many Chatters and the load they
// send, and its Report says whether every acknowledged message reached every
// member of its room, exactly once and in order.
package faults
