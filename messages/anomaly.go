package messages

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// anomalyNamespace roots the deterministic anomaly ids.
var anomalyNamespace = uuid.MustParse("6f1c5a2e-9a43-4c1e-b0a4-3c1f2d8e7b10")

// AnomalyID is the id of the anomaly raised by rule on event eventID. It is
// the same on every redelivery, so rows and messages deduplicate on it.
func AnomalyID(eventID, rule string) string {
	return uuid.NewSHA1(anomalyNamespace, []byte(eventID+"/"+rule)).String()
}

// Anomaly is the event published on events.anomaly.v1 and stored in the
// anomalies table.
type Anomaly struct {
	AnomalyID         string          `json:"anomaly_id"`
	EventID           string          `json:"event_id"`
	CustomerID        string          `json:"customer_id"`
	Type              string          `json:"anomaly_type"`
	Severity          string          `json:"severity"`
	HeartRate         int             `json:"heart_rate"`
	PreviousHeartRate *int            `json:"previous_heart_rate,omitempty"`
	EventTime         time.Time       `json:"event_time"`
	DetectedAt        time.Time       `json:"detected_at"`
	Details           json.RawMessage `json:"details"`
}

// EpisodeAnomaly is the message on events.anomaly.v1 of an episode opening
// (status "open"), reclassification (status "open" again, with
// ReclassifiedFrom: the same anomaly id, its new type and severity) or
// closing ("closed"): the per-event anomaly's fields, for the episode's
// first reading, and the episode's. The opening's message id is the
// anomaly id; the reclassification's and the closing's are derived from it.
type EpisodeAnomaly struct {
	Anomaly
	Status string `json:"status"`
	// ReclassifiedFrom is the rule the episode opened as, once it has
	// become another (a SPIKE become SUSTAINED_HIGH or SUSTAINED_LOW).
	ReclassifiedFrom string     `json:"reclassified_from,omitempty"`
	StartedAt        time.Time  `json:"started_at"`
	OpenedAt         time.Time  `json:"opened_at"`
	EndedAt          *time.Time `json:"ended_at,omitempty"`
	PeakRate         int        `json:"peak_heart_rate"`
	TroughRate       int        `json:"trough_heart_rate"`
	Samples          int        `json:"samples"`
	DurationMS       int64      `json:"duration_ms"`
}
