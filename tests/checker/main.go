// Command checker decides whether a guessgame history is linearizable, with Porcupine
// (the checker etcd's robustness tests use).
//
// Input: a JSON array of operations written by `guessgame-chaos` (writes, guesses and
// linearizable reads, with invoke/return times in microseconds and an outcome of ok, fail
// or unknown). Operations whose outcome is unknown (proposed, fate not seen) may take effect
// at any point after their invocation, or never: they get a return time after everything.
//
// Exit status: 0 linearizable, 1 not linearizable (a visualization is written next to the
// input), 2 the check timed out or the input is bad.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

type op struct {
	Client   int    `json:"client"`
	Kind     string `json:"kind"` // write | guess | read_lin
	Player   string `json:"player"`
	Value    int    `json:"value"`
	Invoke   int64  `json:"invoke_us"`
	Complete int64  `json:"complete_us"`
	Outcome  string `json:"outcome"` // ok | fail | unknown
	Error    string `json:"error"`
	Round    uint64 `json:"round"`
	Target   *int   `json:"target"`
	Guesses  uint64 `json:"guesses"`
}

type input struct {
	Kind   string
	Player string
	Value  int
}

type output struct {
	Outcome string
	Error   string
	Round   uint64
	Target  int // -1: none
	Guesses uint64
}

// state is the game as clients can observe it: round, target, who guessed in the round.
type state struct {
	Round    uint64
	Target   int
	Guessers string // sorted, comma-separated
}

func (s state) has(p string) bool {
	for _, g := range strings.Split(s.Guessers, ",") {
		if g != "" && g == p {
			return true
		}
	}
	return false
}

func (s state) with(p string) state {
	gs := []string{p}
	if s.Guessers != "" {
		gs = append(gs, strings.Split(s.Guessers, ",")...)
	}
	sort.Strings(gs)
	return state{s.Round, s.Target, strings.Join(gs, ",")}
}

func (s state) count() uint64 {
	if s.Guessers == "" {
		return 0
	}
	return uint64(len(strings.Split(s.Guessers, ",")))
}

var model = porcupine.Model{
	Init: func() interface{} { return state{0, -1, ""} },
	Step: func(st, in, out interface{}) (bool, interface{}) {
		s, i, o := st.(state), in.(input), out.(output)
		switch i.Kind {
		case "write":
			next := state{s.Round + 1, i.Value, ""}
			if o.Outcome == "unknown" {
				return true, next
			}
			return o.Outcome == "ok" && o.Round == s.Round+1, next
		case "guess":
			open, has := s.Round > 0, s.has(i.Player)
			switch o.Outcome {
			case "unknown":
				if open && !has {
					return true, s.with(i.Player)
				}
				return true, s
			case "ok":
				if !open || has || o.Round != s.Round {
					return false, s
				}
				return true, s.with(i.Player)
			default:
				switch o.Error {
				case "duplicate_guess":
					return open && has, s
				case "no_open_round":
					return !open, s
				}
				return true, s // a refusal that changes nothing
			}
		case "read_lin":
			return o.Round == s.Round && o.Target == s.Target && o.Guesses == s.count(), s
		}
		return false, s
	},
	Equal: func(a, b interface{}) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(input), out.(output)
		switch i.Kind {
		case "read_lin":
			return fmt.Sprintf("read -> round %d target %d guesses %d", o.Round, o.Target, o.Guesses)
		default:
			return fmt.Sprintf("%s %s %d -> %s %s round %d", i.Kind, i.Player, i.Value, o.Outcome, o.Error, o.Round)
		}
	},
	DescribeState: func(st interface{}) string {
		s := st.(state)
		return fmt.Sprintf("round %d target %d guessers [%s]", s.Round, s.Target, s.Guessers)
	},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checker HISTORY.json [TIMEOUT_SECONDS]")
		os.Exit(2)
	}
	timeout := 60 * time.Second
	if len(os.Args) > 2 {
		if d, err := time.ParseDuration(os.Args[2] + "s"); err == nil {
			timeout = d
		}
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var ops []op
	if err := json.Unmarshal(data, &ops); err != nil {
		fmt.Fprintln(os.Stderr, "bad history:", err)
		os.Exit(2)
	}
	var end int64
	for _, o := range ops {
		if o.Complete > end {
			end = o.Complete
		}
	}
	var history []porcupine.Operation
	for _, o := range ops {
		ret := o.Complete
		if o.Outcome == "unknown" {
			ret = end + 1_000_000
		}
		target := -1
		if o.Target != nil {
			target = *o.Target
		}
		history = append(history, porcupine.Operation{
			ClientId: o.Client,
			Input:    input{o.Kind, o.Player, o.Value},
			Call:     o.Invoke,
			Output:   output{o.Outcome, o.Error, o.Round, target, o.Guesses},
			Return:   ret,
		})
	}
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	switch res {
	case porcupine.Ok:
		fmt.Printf("linearizable (%d operations)\n", len(history))
	case porcupine.Illegal:
		path := os.Args[1] + ".html"
		if err := porcupine.VisualizePath(model, info, path); err == nil {
			fmt.Printf("NOT linearizable; visualization: %s\n", path)
		} else {
			fmt.Println("NOT linearizable")
		}
		os.Exit(1)
	default:
		fmt.Printf("check timed out after %s (%d operations)\n", timeout, len(history))
		os.Exit(2)
	}
}
