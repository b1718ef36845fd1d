package app

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// FollowGoRun makes the process stop like on SIGTERM when the `go run` that
// started it dies. The go command does not pass SIGTERM on to the program it
// runs: without this, `kill <pid of go run>` would leave the pipeline running
// orphaned, holding its ports, instead of committing and exiting. Only under
// `go run`: a pipeline started from a shell must outlive the shell.
func FollowGoRun() {
	ppid := os.Getppid()
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "go" {
		return
	}
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() != ppid { // the go command died before prctl took effect
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}
