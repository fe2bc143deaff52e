// Package e2e holds end-to-end tests of the whole system as users run it:
// several gateway processes behind nginx on the machine's RabbitMQ and
// Redis, driven by Go clients and by headless Chromium. The tests are built
// with the integration tag.
package e2e
