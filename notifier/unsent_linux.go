//go:build linux

package notifier

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// unsent reports the bytes written to c that its peer has not taken yet
// (SIOCOUTQ), and whether it could tell.
func unsent(c syscall.Conn) (int, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ioctlErr != nil {
		return 0, false
	}
	return n, true
}
