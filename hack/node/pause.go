// The sandbox ("pause") process of the test node's pods: holds the pod's namespaces, reaps
// zombies, exits on SIGINT/SIGTERM. Same job as Kubernetes' build/pause/linux/pause.c, built
// with Go so that no static C library is needed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
