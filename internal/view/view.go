// Package view reads request bytes as strings without copying them: the
// router compares, routes and logs a request's method, path and header
// values many times, and copying each would cost an allocation per
// request.
package view

import "unsafe"

// String returns b as a string without copying. The string is valid while
// b is, and b must not change while the string is used: for a request's
// bytes, until the request is finished.
func String(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
