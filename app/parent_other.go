//go:build !linux

package app

// FollowGoRun is a no-op outside Linux.
func FollowGoRun() {}
