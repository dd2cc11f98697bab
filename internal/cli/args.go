package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
)

// entityArg is the Args of every command that takes one ENTITY: a missing
// or extra argument is a usage error that lists the entities declared in
// the config, which is what the user needs to type.
func entityArg(a *app) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch len(args) {
		case 1:
			return nil
		case 0:
			return fmt.Errorf("ENTITY is missing: %s\nUsage: %s", a.declaredEntities(), cmd.UseLine())
		default:
			return fmt.Errorf("%s takes one ENTITY, and was given %d: %s\nUsage: %s", cmd.CommandPath(), len(args), strings.Join(args, " "), cmd.UseLine())
		}
	}
}

// declaredEntities says which entities the config declares, for a usage
// error: it reads the config without validating it, since the error to
// report is the missing argument.
func (a *app) declaredEntities() string {
	cfg, err := config.Load(a.configPath, a.io.Env)
	if err != nil {
		return "the declared entities cannot be listed: " + err.Error()
	}
	file := cfg.Path
	if file == "" {
		return "no " + config.DefaultFile + " here declares any entity: run ecst next to your " + config.DefaultFile + ", or pass --config"
	}
	names := cfg.EntityNames()
	if len(names) == 0 {
		return file + " declares no entity (under entities:)"
	}
	return "name one of the entities declared in " + file + ": " + strings.Join(names, ", ")
}
