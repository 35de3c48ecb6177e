//go:build !linux

package notifier

import "syscall"

// unsent cannot tell here: frames are written as they come, and a client
// that stops reading is closed when a write times out, without a close frame.
func unsent(syscall.Conn) (int, bool) { return 0, false }
