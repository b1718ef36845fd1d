package grafana

import (
	_ "embed"
	"encoding/json"
)

//go:embed dashboards/heartbeat.json
var dashboardJSON []byte

// Dashboard returns the provisioned dashboard's JSON.
func Dashboard() []byte { return dashboardJSON }

// SQLQuery is one PostgreSQL query of a panel, as written in the dashboard
// (macros not expanded).
type SQLQuery struct {
	Panel string
	RefID string
	SQL   string
}

// SQLQueries returns every PostgreSQL query of the dashboard, rows included.
func SQLQueries() ([]SQLQuery, error) {
	type panel struct {
		Title   string  `json:"title"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			RefID  string `json:"refId"`
			RawSQL string `json:"rawSql"`
		} `json:"targets"`
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, err
	}
	var out []SQLQuery
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, t := range p.Targets {
				if t.RawSQL != "" {
					out = append(out, SQLQuery{Panel: p.Title, RefID: t.RefID, SQL: t.RawSQL})
				}
			}
		}
	}
	walk(d.Panels)
	return out, nil
}
