package main

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app"
)

// configVariable is one variable of app.Config, found by its env tag.
type configVariable struct {
	name string
	typ  reflect.Type
}

// configVariables lists every variable app.Config reads, by reflection
// over its env tags: a variable added to it is in the extremes test
// without anyone listing it.
func configVariables() []configVariable {
	var out []configVariable
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if env, _, _ := strings.Cut(f.Tag.Get("env"), ","); env != "" {
				out = append(out, configVariable{env, f.Type})
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(app.Config{}))
	return out
}

// extremes are the values a variable of type t is tried with: empty, 0,
// negative, the smallest positive, huge (the largest the type holds, and
// one past it), and malformed.
func extremes(t reflect.Type) []string {
	common := []string{"", "0", "-1", "1", "abc", "1 2"}
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return append(common, "1ns", "-5s", "100000h", "2562047h", "2562048h", "5", "1e400s", "Inf")
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return append(common, "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e9", "1.5")
	case t.Kind() == reflect.Int32:
		return append(common, "2147483647", "2147483648", "-2147483648", "1e9", "1.5")
	case t.Kind() == reflect.Int16:
		return append(common, "32767", "32768", "-32768", "1.5")
	case t.Kind() == reflect.Uint64:
		return append(common, "18446744073709551615", "18446744073709551616", "1.5")
	case t.Kind() == reflect.Float64:
		return append(common, "1e-300", "1e308", "1e309", "-1e308", "NaN", "Inf", "-Inf", "0x1p-2")
	case t.Kind() == reflect.Bool:
		return append(common, "true", "maybe")
	case t.Kind() == reflect.Slice:
		return append(common, ",", "a,,b", strings.Repeat("x,", 5000))
	}
	return append(common, strings.Repeat("x", 300), strings.Repeat("y", 70000), "a\tb", "é", ":", "localhost:99999")
}

// extremeCase is a variable set to one extreme value, alone.
type extremeCase struct {
	name, value string
}

func (c extremeCase) String() string {
	v := c.value
	if len(v) > 24 {
		v = fmt.Sprintf("%s…(%d bytes)", v[:12], len(v))
	}
	return fmt.Sprintf("%s=%q", c.name, v)
}

// TestConfigExtremes sets each variable of app.Config, alone, to each of
// its extremes: the configuration either takes it or refuses it naming the
// variable. It returns (through acceptedExtremes) the values taken, which
// TestStartupAtExtremes starts the pipeline with.
func TestConfigExtremes(t *testing.T) {
	accepted := acceptedExtremes(t)
	require.NotEmpty(t, accepted)
	for _, c := range accepted {
		t.Log("accepted:", c)
	}
}

// acceptedExtremes checks every variable at every extreme at the
// configuration level and returns the cases the configuration accepts.
func acceptedExtremes(t *testing.T) []extremeCase {
	t.Helper()
	vars := configVariables()
	require.Greater(t, len(vars), 60, "every variable of app.Config")
	var accepted []extremeCase
	for _, v := range vars {
		for _, value := range extremes(v.typ) {
			c := extremeCase{v.name, value}
			_, err := app.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{v.name: value}))
			if err != nil {
				require.Contains(t, err.Error(), v.name, "%s: the error names the variable", c)
				require.NotContains(t, err.Error(), "Config", "%s: the error names the variable, not the Go field", c)
				continue
			}
			accepted = append(accepted, c)
		}
	}
	return accepted
}
