package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// EpisodeStore records episode changes with their outgoing messages
// atomically (written tells, per update, whether it changed a row), and
// reloads a customer's recent episodes.
type EpisodeStore interface {
	WriteEpisodes(ctx context.Context, topic string, ups []messages.EpisodeUpdate) (written []bool, err error)
	RecentEpisodes(ctx context.Context, customer string, since time.Time) ([]messages.Episode, error)
}

// EpisodeHistory reads a customer's readings a [HistoryLog] kept: prime,
// its latest before warmFrom, and those from warmFrom on, in the
// partition's order, all from records of src's partition before src.
type EpisodeHistory interface {
	Readings(ctx context.Context, h messages.Heartbeat, src messages.Source, warmFrom time.Time) (prime *messages.Reading, rs []messages.Reading, err error)
}

// DetectEpisodesConfig is what [DetectEpisodes] needs: all but Observe are
// required.
type DetectEpisodesConfig struct {
	Limits  messages.Limits
	Engine  *rules.EpisodeEngine
	Store   EpisodeStore
	History EpisodeHistory
	// Kept keeps the readings evaluated, for History.
	Kept HistoryLog
	// Topic is where anomaly messages go (events.anomaly.v1).
	Topic string
	Now   func() time.Time
	// NewID names a record that arrived without a correlation id.
	NewID   func() string
	Log     *slog.Logger
	Observe Observer
}

// DetectEpisodes is the default detector (DETECTION_MODE=episode): it
// validates readings as Persist does and evaluates the valid ones against
// the episode rules ([rules.EpisodeEngine]). Each episode is one anomalies
// row, inserted when it opens, updated when a SPIKE becomes a SUSTAINED
// episode and when it closes; each of those is published on
// events.anomaly.v1 through the outbox, in the transaction that changes the
// row. The state moves on only after it commits.
//
// After a restart, a rebalance or an eviction, a customer's state is
// rebuilt before its first reading is evaluated: its open and recently
// ended episodes from the anomalies table, then its stored readings
// replayed through the same rules (see [rules.EpisodeParams.Recall]).
type DetectEpisodes struct {
	c    DetectEpisodesConfig
	gate rebuildGate
}

// NewDetectEpisodes returns a DetectEpisodes, or the dependencies c lacks.
func NewDetectEpisodes(c DetectEpisodesConfig) (*DetectEpisodes, error) {
	if err := require("DetectEpisodes", dep{"an Engine", c.Engine != nil}, dep{"a Store", c.Store != nil},
		dep{"a History", c.History != nil}, dep{"a HistoryLog (Kept)", c.Kept != nil}, dep{"a Topic", c.Topic != ""},
		dep{"a clock (Now)", c.Now != nil}, dep{"NewID", c.NewID != nil}, dep{"a Log", c.Log != nil}); err != nil {
		return nil, err
	}
	return &DetectEpisodes{c: c}, nil
}

// HandleBatch implements [BatchHandler]: the records of b not done, in
// order, all their episode changes recorded in one transaction at the end.
// Each reading's state but the last's is applied as it is evaluated, ahead
// of that write (the next reading of the customer needs it); if anything
// fails after one was, the partition's state is dropped (ForgetLane)
// and rebuilt from storage when the batch, or its records one by one, come
// again — as after a restart, with nothing of the batch recorded. A batch
// of one record (a single message) applies nothing ahead, so its failure
// leaves the state as it was. The readings evaluated are kept for the
// History once the batch is done.
func (d *DetectEpisodes) HandleBatch(ctx context.Context, b *messages.Batch) (err error) {
	if b.Done >= len(b.Records) {
		return nil
	}
	if err := d.c.Kept.Room(ctx); err != nil {
		return err
	}
	lane := rules.LaneOf(b.Records[b.Done].Source)
	ahead := false
	defer func() {
		if err != nil && ahead {
			d.gate.drop()
			d.c.Engine.ForgetLane(lane)
		}
	}()
	now := d.c.Now()
	var ups []messages.EpisodeUpdate
	var last func()
	kept := make([]messages.Ingest, 0, len(b.Records)-b.Done)
	for i := b.Done; i < len(b.Records); i++ {
		if last != nil {
			last()
			ahead = true
		}
		r := &b.Records[i]
		var h messages.Heartbeat
		if h, ups, last, err = d.evaluate(ctx, r, now, ups); err != nil {
			return err
		}
		if last != nil && r.Source.Offset >= 0 {
			kept = append(kept, messages.Ingest{Reading: h, Source: r.Source})
		}
	}
	if len(ups) > 0 {
		if err := d.record(ctx, ups); err != nil {
			return err
		}
	}
	if last != nil {
		last()
	}
	b.Done = len(b.Records)
	keep(ctx, d.c.Kept, d.c.Log, kept)
	return nil
}

// evaluate validates r's reading, rebuilds its customer's state if the
// engine does not know it, evaluates it, and appends the episode changes it
// makes to ups. apply moves the state past the reading; it is nil for a
// reading not evaluated (invalid: persist routes it).
func (d *DetectEpisodes) evaluate(ctx context.Context, r *messages.Record, now time.Time, ups []messages.EpisodeUpdate) (_ messages.Heartbeat, _ []messages.EpisodeUpdate, apply func(), _ error) {
	h, ok, err := validReading(d.c.Limits, r.Value, now)
	if !ok {
		return h, ups, nil, err
	}
	src, ln := r.Source, rules.LaneOf(r.Source)
	if !d.c.Engine.Known(ln, h.CustomerID) && src.Offset >= 0 {
		if err := d.restore(ctx, ln, h, src); err != nil {
			return h, ups, nil, err
		}
	}
	changes, apply := d.c.Engine.Evaluate(ln, h, now)
	for _, c := range changes {
		up, err := d.update(c, now, r.CorrelationID(d.c.NewID))
		if err != nil {
			return h, ups, nil, err
		}
		ups = append(ups, up)
	}
	return h, ups, apply, nil
}

// record writes ups in one transaction and reports the openings it
// recorded: a reclassification is the same alert, not a new anomaly.
func (d *DetectEpisodes) record(ctx context.Context, ups []messages.EpisodeUpdate) error {
	written, err := d.c.Store.WriteEpisodes(ctx, d.c.Topic, ups)
	if err != nil {
		return err
	}
	for i, up := range ups {
		if written[i] && up.Episode.Status == messages.EpisodeOpen && up.Episode.ReclassifiedFrom == "" {
			d.c.Observe.anomaly(up.Episode.Anomaly)
		}
	}
	return nil
}

// update is change c as its row and its message on the anomaly topic.
func (d *DetectEpisodes) update(c rules.Change, now time.Time, corr string) (messages.EpisodeUpdate, error) {
	ep, err := NewEpisodeAnomaly(c, d.c.Engine.Params(), now)
	if err != nil {
		return messages.EpisodeUpdate{}, err
	}
	body, err := json.Marshal(ep)
	if err != nil {
		return messages.EpisodeUpdate{}, err
	}
	id := ep.AnomalyID
	switch {
	case ep.Status == messages.EpisodeClosed:
		id = messages.AnomalyID(ep.AnomalyID, "closed")
	case ep.ReclassifiedFrom != "":
		// A SPIKE is reclassified at most once.
		id = messages.AnomalyID(ep.AnomalyID, "reclassified")
	}
	out := anomalyMessage(id, body, corr, ep.CustomerID, ep.Type)
	out.Metadata.Set("anomaly_status", ep.Status)
	return messages.EpisodeUpdate{Episode: ep, Message: out}, nil
}

// NewEpisodeAnomaly is change c as the episode's anomalies row and message,
// detected at detectedAt. An open one with ReclassifiedFrom is a
// reclassification.
func NewEpisodeAnomaly(c rules.Change, p rules.EpisodeParams, detectedAt time.Time) (messages.EpisodeAnomaly, error) {
	ep := c.Episode
	details := map[string]any{"threshold": ep.Threshold}
	switch ep.Rule {
	case messages.SustainedHigh:
		details["hold_at_or_above"] = p.SustainedHigh - p.Hysteresis
	case messages.SustainedLow:
		details["hold_at_or_below"] = p.SustainedLow + p.Hysteresis
	case messages.Spike:
		details["previous_heart_rate"] = ep.Base
		details["delta"] = ep.Delta()
		details["confirm_readings"] = p.SpikeConfirm
	case messages.SignalLoss:
		details["last_heart_rate"] = ep.Start.Rate
	}
	if ep.Rule == messages.SustainedHigh || ep.Rule == messages.SustainedLow {
		details["sustain_s"] = p.SustainFor.Seconds()
	}
	if ep.Opened.EventID != "" {
		details["opened_event_id"] = ep.Opened.EventID
		details["opened_heart_rate"] = ep.Opened.Rate
	}
	row := messages.EpisodeAnomaly{
		Status: messages.EpisodeOpen, ReclassifiedFrom: ep.OpenedAs, StartedAt: ep.Start.Time.UTC(), OpenedAt: ep.OpenedAt.UTC(),
		PeakRate: ep.Peak, TroughRate: ep.Trough, Samples: ep.Samples, DurationMS: ep.Duration().Milliseconds(),
	}
	switch c.Kind {
	case rules.Reclassified:
		// Merged into the opening's details: the SPIKE's jump stays.
		details["reclassified_from"] = ep.OpenedAs
		details["reclassified_at"] = ep.Reclassified.Time.UTC()
		details["reclassified_event_id"] = ep.Reclassified.EventID
		details["reclassified_heart_rate"] = ep.Reclassified.Rate
		delete(details, "opened_event_id")
		delete(details, "opened_heart_rate")
	case rules.Closed:
		details = map[string]any{"close_reason": ep.CloseReason}
		end := ep.End.UTC()
		row.Status, row.EndedAt = messages.EpisodeClosed, &end
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return messages.EpisodeAnomaly{}, err
	}
	var prev *int
	if ep.Identity() == messages.Spike {
		b := ep.Base
		prev = &b
	}
	row.Anomaly = messages.Anomaly{
		AnomalyID: ep.ID(), EventID: ep.Start.EventID, CustomerID: ep.CustomerID, Type: ep.Rule, Severity: ep.Severity,
		HeartRate: ep.Start.Rate, PreviousHeartRate: prev, EventTime: ep.Start.Time.UTC(), DetectedAt: detectedAt.UTC(),
		Details: raw,
	}
	return row, nil
}

func (d *DetectEpisodes) restore(ctx context.Context, ln rules.Lane, h messages.Heartbeat, src messages.Source) error {
	if err := d.gate.before(ctx, d.c.Kept); err != nil {
		return err
	}
	p := d.c.Engine.Params()
	recent, warmFrom, fullFrom, err := p.Recall(h.Timestamp, func(since time.Time) ([]messages.Episode, error) {
		return d.c.Store.RecentEpisodes(ctx, h.CustomerID, since)
	})
	if err != nil {
		return err
	}
	prime, readings, err := d.c.History.Readings(ctx, h, src, warmFrom)
	if err != nil {
		return err
	}
	outcome := "found"
	if prime == nil && len(readings) == 0 {
		// Only the recorded episodes; pending timers start again.
		outcome = "none"
	}
	open, current := d.c.Engine.Restore(ln, h.CustomerID, prime, readings, fullFrom, recent)
	if !current {
		// A later assignment of the partition began meanwhile: the record
		// evaluates to nothing, and that assignment delivers it again.
		return nil
	}
	want := map[string]bool{}
	for _, ep := range recent {
		if !ep.Closed {
			want[ep.ID()] = true
		}
	}
	for _, ep := range open {
		delete(want, ep.ID())
	}
	if len(want) > 0 {
		d.c.Log.Warn("episodes recorded open were not rebuilt from the stored readings; they stay open until a reading closes them",
			"customer_id", h.CustomerID, "episodes", len(want))
	}
	d.c.Observe.history(outcome)
	return nil
}

// Evict drops the state of customers idle for idle (wall clock): their
// next reading rebuilds it, after the readings kept are written.
func (d *DetectEpisodes) Evict(idle time.Duration) int {
	d.gate.drop()
	return d.c.Engine.Evict(idle)
}
