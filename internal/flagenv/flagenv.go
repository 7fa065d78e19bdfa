// Package flagenv lets every flag of a command also be set from the
// environment: flag "redis-url" of any Nudge command reads NUDGE_REDIS_URL
// when the command line does not set it. The command line wins.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Prefix starts the name of every environment variable.
const Prefix = "NUDGE_"

// EnvName returns the environment variable of a flag.
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ScopedName names the variables of a tool that must never read the
// services' settings (the demo, the chaos run, the benchmarks: a shell with
// production's NUDGE_DATABASE_URL exported must not steer them there):
// flag "database-url" of scope "demo" reads NUDGE_DEMO_DATABASE_URL.
func ScopedName(scope string) func(flagName string) string {
	return func(flagName string) string {
		return Prefix + strings.ToUpper(scope) + "_" + strings.TrimPrefix(EnvName(flagName), Prefix)
	}
}

// Only names the variables of the given flags, and of no other: for a
// command whose other flags must not follow a variable exported for
// another program (a NUDGE_APP set for the worker must not filter a
// report).
func Only(flags ...string) func(flagName string) string {
	return func(flagName string) string {
		if slices.Contains(flags, flagName) {
			return EnvName(flagName)
		}
		return ""
	}
}

func parse(fs *flag.FlagSet, args []string, getenv func(string) string, envName func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		name := envName(f.Name)
		if name == "" {
			return
		}
		if v := getenv(name); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, serr)
			}
		}
	})
	return err
}

// FlagSet is a command's flags: a flag.FlagSet that continues on error,
// whose flags also read the environment variables one function names, the
// same when they are parsed (Parse) and when -h prints them.
type FlagSet struct {
	*flag.FlagSet
	env func(flagName string) string
}

// NewFlagSet returns the flags of command name. -h prints summary and the
// settings, each flag with the variable env names it (EnvName,
// ScopedName, Only, NoEnv) and its default.
func NewFlagSet(name, summary string, env func(flagName string) string) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: env}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\n", summary)
		printSettings(fs.Output(), fs.FlagSet, env)
	}
	return fs
}

// ParseEnv parses args, then sets each flag the command line left alone
// from its variable, if present (flag.ErrHelp for -h).
func (fs *FlagSet) ParseEnv(args []string, getenv func(string) string) error {
	return parse(fs.FlagSet, args, getenv, fs.env)
}

// PrintSettings prints the settings block of -h to w.
func (fs *FlagSet) PrintSettings(w io.Writer) { printSettings(w, fs.FlagSet, fs.env) }

// printSettings writes the settings block of Usage: a flag a line with its
// variable and default, its meaning on the next. docs/settings.md is
// checked against these lines (e2e: TestSettingsDoc).
func printSettings(w io.Writer, fs *flag.FlagSet, envName func(string) string) {
	fmt.Fprintln(w, "Settings (flag, environment variable, default):")
	fs.VisitAll(func(f *flag.Flag) {
		if env := envName(f.Name); env != "" {
			fmt.Fprintf(w, "  -%s  (%s, default %q)\n      %s\n", f.Name, env, f.DefValue, f.Usage)
		} else {
			fmt.Fprintf(w, "  -%s  (default %q)\n      %s\n", f.Name, f.DefValue, f.Usage)
		}
	})
}

// NoEnv names no variable: for the flags of a subcommand that reads none.
func NoEnv(string) string { return "" }
