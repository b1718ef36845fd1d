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
