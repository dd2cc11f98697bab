package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The machine is shared, so wall-clock rates and latencies move with
// whatever else runs. The CPU time the measured processes themselves spend
// does not: cpuMeter adds up user+system time, from /proc, of four groups:
// PostgreSQL (the postmaster and its children: backends, walsenders, WAL
// writer), the broker, this process (the harness: writers, reader, polls)
// and its children, the system under test (Connect's JVM, or ecst's relay
// in a process of its own).
type cpuMeter struct {
	postmaster int // 0: unknown (an external database)
	broker     int // 0: unknown (an external broker)
}

// cpuSample is the CPU time of each measured process at one moment.
type cpuSample map[int]procCPU

type procCPU struct {
	group int // groupPG, groupBroker, groupHarness or groupSystem
	cpu   time.Duration
}

const (
	groupPG = iota
	groupBroker
	groupHarness
	groupSystem
)

// cpuUse is CPU time spent between two samples.
type cpuUse struct {
	pg, broker, harness, system time.Duration
	known                       bool
}

func (u cpuUse) total() time.Duration { return u.pg + u.broker + u.harness + u.system }

const clockTick = 100 // USER_HZ on Linux

// procStat returns a process's parent and its user+system CPU time.
func procStat(pid int) (ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is the state (field 3); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, time.Duration(ut+st) * time.Second / clockTick, true
}

func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, cpu, ok := procStat(pid)
		if !ok {
			continue
		}
		switch {
		case m.postmaster != 0 && (pid == m.postmaster || ppid == m.postmaster):
			s[pid] = procCPU{groupPG, cpu}
		case m.broker != 0 && pid == m.broker:
			s[pid] = procCPU{groupBroker, cpu}
		case pid == self:
			s[pid] = procCPU{groupHarness, cpu}
		case ppid == self:
			s[pid] = procCPU{groupSystem, cpu}
		}
	}
	return s
}

// since is the CPU time spent from a to b. A process that started in
// between counts from zero; one that exited in between is not counted
// (callers take b before they stop anything).
func (m *cpuMeter) since(a, b cpuSample) cpuUse {
	u := cpuUse{known: m.postmaster != 0 && m.broker != 0}
	for pid, p := range b {
		d := p.cpu - a[pid].cpu
		switch p.group {
		case groupPG:
			u.pg += d
		case groupBroker:
			u.broker += d
		case groupHarness:
			u.harness += d
		case groupSystem:
			u.system += d
		}
	}
	return u
}
