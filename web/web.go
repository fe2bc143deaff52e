// Package web holds the Parley browser client: a static page, its ES modules
// and its stylesheet, embedded in the binary so that one gateway process
// serves everything a browser needs.
//
// The gateway serves Files at "/" and the WebSocket at "/ws" on the same
// origin; the client derives the WebSocket URL from the page's own address.
// There is no build step: the files here are what the browser runs.
//
// The client is written for a Content-Security-Policy that forbids inline
// script and inline style (for example "default-src 'self'"): index.html
// loads app.js and style.css by URL and holds no handlers or style
// attributes, and user text is only ever set as text, never as HTML.
//
// The pure logic of both pages (protocol.js, statsmodel.js) has tests under
// test/, run with "node --test web/test/"; they are not embedded.
package web

import "embed"

// Files is the browser client: index.html, app.js (the entry module),
// protocol.js (its pure logic), style.css and favicon.svg, and the cluster
// statistics page: stats.html (served at /stats), stats.js, statsmodel.js
// (its pure logic) and stats.css, at the root of the file system. Serve it
// with http.FileServerFS(web.Files).
//
//go:embed index.html app.js protocol.js style.css favicon.svg
//go:embed stats.html stats.js statsmodel.js stats.css
var Files embed.FS
