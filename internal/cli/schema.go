package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/schemas"
)

func newSchemaCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Register, check, list and diff the entities' Avro schemas",
		Long: `The event contract is each entity's Avro schema (entities.<name>.schema in
ecst.yaml), registered under the subject <topic>-value with the entity's
compatibility level (default FULL_TRANSITIVE: every version can read every
other's records, in both directions).

Compatibility is checked locally, by the Avro specification's schema
resolution rules, before anything reaches the registry: a breaking change is
refused with a reason per problem that says what changed, which readers or
writers break, and how to fix it.`,
	}
	cmd.AddCommand(newSchemaRegisterCmd(a), newSchemaCheckCmd(a), newSchemaListCmd(a), newSchemaDiffCmd(a))
	return cmd
}

// selectEntities returns the named entities, or all of them.
func selectEntities(cfg *config.Config, names []string) ([]*config.Entity, error) {
	if len(names) == 0 {
		names = cfg.EntityNames()
	}
	if len(names) == 0 {
		return nil, errors.New("no entities declared: is --config pointing at your ecst.yaml?")
	}
	out := make([]*config.Entity, 0, len(names))
	for _, n := range names {
		e, err := cfg.Entity(n)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func newSchemaRegisterCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "register [ENTITY...]",
		Short: "Check, then register each entity's schema and set its subject's compatibility",
		Long: `For each entity (all when none is named): compares the local .avsc with every
registered version of <topic>-value under the entity's compatibility level,
refuses a breaking change before calling the registry, then sets the subject's
compatibility level and registers the schema. Registering a schema that is
already there changes nothing. Prints subject, version and id.

Exit codes: 0 registered or unchanged; 1 a change was refused; 2 usage,
config or registry error.`,
		Example: `  ecst schema register            # every entity
  ecst schema register customer   # one`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, reg, err := a.registry()
			if err != nil {
				return err
			}
			defer reg.Close()
			ents, err := selectEntities(cfg, args)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			refused := 0
			for _, e := range ents {
				local, err := schemas.Parse(e.SchemaText)
				if err != nil {
					return fmt.Errorf("%s: %w", e.SchemaPath, err)
				}
				versions, err := reg.Versions(ctx, e.Subject())
				if err != nil {
					return err
				}
				problems, err := schemas.Check(e.Compatibility, local, versions)
				if err != nil {
					return err
				}
				if len(problems) > 0 {
					refused++
					fmt.Fprintf(out, "%s: refused, the change breaks %s:\n", e.Subject(), e.Compatibility)
					for _, p := range problems {
						fmt.Fprintf(out, "  - %s\n    fix: %s\n", p.Message, p.Fix)
					}
					continue
				}
				if err := reg.SetCompatibility(ctx, e.Subject(), e.Compatibility); err != nil {
					return err
				}
				known := false
				for _, v := range versions {
					if schemas.SameText(v.Text, e.SchemaText) {
						known = true
					}
				}
				id, err := reg.Register(ctx, e.Subject(), e.SchemaText)
				if err != nil {
					return err
				}
				ver, err := reg.VersionOf(ctx, e.Subject(), e.SchemaText)
				if err != nil {
					return err
				}
				state := "registered"
				if known {
					state = "unchanged"
				}
				fmt.Fprintf(out, "%s\tversion %d\tid %d\t%s\t%s\n", e.Subject(), ver, id, e.Compatibility, state)
			}
			if refused > 0 {
				return problem("%d schema change(s) refused; nothing was sent to the registry for them", refused)
			}
			return nil
		},
	}
}

// entityReport is one entity's result in `schema check`.
type entityReport struct {
	Entity     string            `json:"entity"`
	Subject    string            `json:"subject"`
	Level      string            `json:"level"`
	File       string            `json:"file"`
	Against    []string          `json:"against"`
	Compatible bool              `json:"compatible"`
	Problems   []schemas.Problem `json:"problems"`
}

func newSchemaCheckCmd(a *app) *cobra.Command {
	var against, format string
	cmd := &cobra.Command{
		Use:   "check [ENTITY...]",
		Short: "Check the local schemas against the registry, or against a git ref",
		Long: `Checks each entity's local .avsc against its baseline under the entity's
compatibility level (transitive levels: every version; the others: the latest):

  (default)         every registered version of <topic>-value
  --against git:REF the schema file as it is at REF (a branch, tag or commit);
                    no registry is needed, so it runs in any CI job

Exit 1 on a breaking change, with one reason per problem: what changed, which
readers or writers break, how to fix it. --format json prints one JSON object;
--format github-actions prints ::error annotations on the schema files.`,
		Example: `  ecst schema check
  ecst schema check customer --against git:origin/main --format github-actions`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "text", "json", "github-actions":
			default:
				return fmt.Errorf("--format: %q is not text, json or github-actions", format)
			}
			var cfg *config.Config
			var reg *schemas.Registry
			var err error
			ref, fromGit := strings.CutPrefix(against, "git:")
			switch {
			case against == "":
				cfg, reg, err = a.registry()
				if err == nil {
					defer reg.Close()
				}
			case fromGit && ref != "":
				cfg, err = a.loadConfig()
			default:
				return fmt.Errorf("--against: %q is not git:REF", against)
			}
			if err != nil {
				return err
			}
			ents, err := selectEntities(cfg, args)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var reports []entityReport
			for _, e := range ents {
				local, err := schemas.Parse(e.SchemaText)
				if err != nil {
					return fmt.Errorf("%s: %w", e.SchemaPath, err)
				}
				var baseline []schemas.Version
				if fromGit {
					baseline, err = gitBaseline(ctx, e.SchemaPath, ref)
				} else {
					baseline, err = reg.Versions(ctx, e.Subject())
				}
				if err != nil {
					return err
				}
				problems, err := schemas.Check(e.Compatibility, local, baseline)
				if err != nil {
					return err
				}
				rep := entityReport{Entity: e.Name, Subject: e.Subject(), Level: e.Compatibility, File: e.SchemaPath,
					Compatible: len(problems) == 0, Problems: problems, Against: []string{}}
				if rep.Problems == nil {
					rep.Problems = []schemas.Problem{}
				}
				for _, v := range baseline {
					rep.Against = append(rep.Against, v.Label)
				}
				reports = append(reports, rep)
			}
			if err := printReports(cmd.OutOrStdout(), format, reports); err != nil {
				return err
			}
			broken := 0
			for _, r := range reports {
				if !r.Compatible {
					broken++
				}
			}
			if broken > 0 {
				return problem("%d schema(s) break their compatibility level", broken)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&against, "against", "", "baseline: git:REF (default: the registry)")
	cmd.Flags().StringVar(&format, "format", "text", "output: text, json or github-actions")
	return cmd
}

func printReports(w io.Writer, format string, reports []entityReport) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"entities": reports})
	case "github-actions":
		for _, r := range reports {
			for _, p := range r.Problems {
				fmt.Fprintf(w, "::error file=%s,title=%s breaks %s::%s%%0Afix: %s\n", r.File, r.Subject, p.Direction, ghEscape(p.Message), ghEscape(p.Fix))
			}
			if r.Compatible {
				fmt.Fprintf(w, "::notice file=%s,title=%s::compatible under %s\n", r.File, r.Subject, r.Level)
			}
		}
		return nil
	}
	for _, r := range reports {
		base := "no earlier version"
		if len(r.Against) > 0 {
			base = strings.Join(r.Against, ", ")
		}
		if r.Compatible {
			fmt.Fprintf(w, "%s (%s, %s): compatible with %s\n", r.Entity, r.Subject, r.Level, base)
			continue
		}
		fmt.Fprintf(w, "%s (%s, %s): %d problem(s) against %s\n", r.Entity, r.Subject, r.Level, len(r.Problems), base)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n    fix: %s\n", p.Message, p.Fix)
		}
	}
	return nil
}

// ghEscape escapes a workflow command's message.
func ghEscape(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

// gitBaseline reads the schema file as it is at ref. A file that does not
// exist there is a new entity: nothing to be compatible with.
func gitBaseline(ctx context.Context, path, ref string) ([]schemas.Version, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(abs)
	top, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return nil, fmt.Errorf("--against git:%s: %s is not in a git work tree", ref, path)
	}
	root, err := filepath.EvalSymlinks(strings.TrimSpace(string(top)))
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil {
		return nil, err
	}
	if err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--verify", "--quiet", ref+"^{commit}").Run(); err != nil {
		return nil, fmt.Errorf("--against git:%s: no such commit, branch or tag", ref)
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "show", ref+":"+filepath.ToSlash(rel)).Output()
	if err != nil {
		return nil, nil // the file is new since ref
	}
	s, err := config.ParseSchemaFile(rel+" at "+ref, out)
	if err != nil {
		return nil, err
	}
	return []schemas.Version{{Label: "git:" + ref, Schema: s, Text: string(out)}}, nil
}

func newSchemaListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List each entity's subject: latest version, id, level, and whether the local file matches",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, reg, err := a.registry()
			if err != nil {
				return err
			}
			defer reg.Close()
			ents, err := selectEntities(cfg, nil)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENTITY\tSUBJECT\tVERSIONS\tLATEST\tID\tLEVEL\tLOCAL FILE")
			for _, e := range ents {
				versions, err := reg.Versions(ctx, e.Subject())
				if err != nil {
					return err
				}
				level, err := reg.Compatibility(ctx, e.Subject())
				if err != nil {
					return err
				}
				if level == "" {
					level = "(registry default)"
				}
				if len(versions) == 0 {
					fmt.Fprintf(tw, "%s\t%s\t0\t-\t-\t%s\tnot registered\n", e.Name, e.Subject(), level)
					continue
				}
				latest := versions[len(versions)-1]
				state := "differs from latest (see " + a.command("schema", "diff", e.Name) + ")"
				for _, v := range versions {
					if schemas.SameText(v.Text, e.SchemaText) {
						state = "is " + v.Label
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", e.Name, e.Subject(), len(versions), latest.Label, latest.ID, level, state)
			}
			return tw.Flush()
		},
	}
}

func newSchemaDiffCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "diff ENTITY",
		Short: "Field-level diff of the local schema against the latest registered version",
		Long: `Prints what changed, field by field, from the latest registered version of the
entity's subject to the local .avsc: + added, - removed, ~ changed (type or
default). Exits 0 whether or not anything differs; 'ecst schema check' judges
compatibility.`,
		Args: entityArg(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, reg, err := a.registry()
			if err != nil {
				return err
			}
			defer reg.Close()
			e, err := cfg.Entity(args[0])
			if err != nil {
				return err
			}
			local, err := schemas.Parse(e.SchemaText)
			if err != nil {
				return err
			}
			versions, err := reg.Versions(cmd.Context(), e.Subject())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(versions) == 0 {
				fmt.Fprintf(out, "%s is not registered: every field is new\n", e.Subject())
				return nil
			}
			latest := versions[len(versions)-1]
			changes := schemas.Diff(latest.Schema, local)
			if len(changes) == 0 {
				fmt.Fprintf(out, "%s: the local schema has the same fields as %s\n", e.Subject(), latest.Label)
				return nil
			}
			fmt.Fprintf(out, "%s: %s -> local %s\n", e.Subject(), latest.Label, e.SchemaPath)
			for _, c := range changes {
				fmt.Fprintln(out, c)
			}
			return nil
		},
	}
}

// registry loads the config and builds a registry client.
func (a *app) registry() (*config.Config, *schemas.Registry, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return nil, nil, err
	}
	return cfg, reg, nil
}
