package grafana

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

//go:embed dashboards/heartbeat.json
var dashboardJSON []byte

// Dashboard returns the provisioned dashboard's JSON.
func Dashboard() []byte { return dashboardJSON }

// Board is what Grafana reads of a dashboard's JSON that its queries
// depend on.
type Board struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []Panel `json:"panels"`
	Time   struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []json.RawMessage `json:"list"`
	} `json:"templating"`
}

// Panel is one panel; a row holds its panels in Panels.
type Panel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Datasource  *DatasourceRef           `json:"datasource"`
	Targets     []Target                 `json:"targets"`
	Panels      []Panel                  `json:"panels"`
	GridPos     struct{ X, Y, W, H int } `json:"gridPos"`
	FieldConfig struct {
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options any    `json:"options"`
			} `json:"matcher"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Options struct {
		// XField is the field a bar chart puts on its x axis.
		XField string `json:"xField"`
	} `json:"options"`
}

// DatasourceRef names a provisioned datasource by uid.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel: RawSQL for PostgreSQL, Expr for
// Prometheus.
type Target struct {
	RefID      string         `json:"refId"`
	Datasource *DatasourceRef `json:"datasource"`
	RawSQL     string         `json:"rawSql"`
	Format     string         `json:"format"`
	Expr       string         `json:"expr"`
	Instant    bool           `json:"instant"`
	Range      bool           `json:"range"`
}

// Load parses the provisioned dashboard.
func Load() (Board, error) {
	var b Board
	if err := json.Unmarshal(dashboardJSON, &b); err != nil {
		return Board{}, fmt.Errorf("parse dashboards/heartbeat.json: %w", err)
	}
	return b, nil
}

// Flat returns the board's panels, a row's panels in place of the row.
func (b Board) Flat() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(b.Panels)
	return out
}

// SQLQuery is one PostgreSQL query of a panel, as written in the dashboard
// (macros not expanded).
type SQLQuery struct {
	Panel string
	RefID string
	SQL   string
}

// SQLQueries returns every PostgreSQL query of the dashboard, rows included.
func SQLQueries() ([]SQLQuery, error) {
	b, err := Load()
	if err != nil {
		return nil, err
	}
	var out []SQLQuery
	for _, p := range b.Flat() {
		for _, t := range p.Targets {
			if t.RawSQL != "" {
				out = append(out, SQLQuery{Panel: p.Title, RefID: t.RefID, SQL: t.RawSQL})
			}
		}
	}
	return out, nil
}
