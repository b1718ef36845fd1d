package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// AnomalyStore records an anomaly and its outgoing message atomically,
// reporting false when the anomaly was already recorded.
type AnomalyStore interface {
	Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error)
}

// History rebuilds a customer's state from storage: the latest reading
// before a record of the raw topic.
type History interface {
	Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error)
}

// Detect validates readings with the same validation as Persist and
// evaluates the valid ones against the rules. An anomaly's row and its
// events.anomaly.v1 message are one transaction (outbox); the customer's
// state moves on only after it commits.
type Detect struct {
	Limits messages.Limits
	Engine *rules.Engine
	Store  AnomalyStore
	// History, when set, is asked for the previous reading of a customer the
	// engine does not know (after a restart, a rebalance or an eviction).
	History      History
	AnomalyTopic string
	Now          func() time.Time
	// OnAnomaly is called for each newly recorded anomaly (metrics).
	OnAnomaly func(a messages.Anomaly)
	// OnHistory is called after each history lookup with its outcome.
	OnHistory func(outcome string)
	Logger    *slog.Logger
}

// Handle implements message.NoPublishHandlerFunc. Invalid readings are
// acked without evaluation: Persist routes them to the invalid topic, and a
// sensor fault must not also raise a clinical alarm.
func (d *Detect) Handle(msg *message.Message) error { return d.handle(messageInput(msg)) }

// HandleRecord handles one record of a batch message, as Handle its message.
func (d *Detect) HandleRecord(ctx context.Context, r *messages.Record, newID func() string) error {
	return d.handle(recordInput(ctx, r, newID))
}

func (d *Detect) handle(in input) error {
	now := d.Now()
	h, ok, err := validReading(d.Limits, in.payload, now)
	if !ok {
		return err
	}
	if d.History != nil && !d.Engine.Known(h.CustomerID) {
		if err := d.restore(in.ctx, h, in.src, in.hasSrc); err != nil {
			return err
		}
	}
	f, found, apply := d.Engine.Evaluate(h)
	if !found {
		apply()
		return nil
	}
	a, err := NewAnomaly(h, f, now)
	if err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	out := anomalyMessage(a.AnomalyID, body, in.correlationID(), a.CustomerID, a.Type)
	inserted, err := d.Store.Write(in.ctx, a, d.AnomalyTopic, out)
	if err != nil {
		return err
	}
	apply()
	if inserted && d.OnAnomaly != nil {
		d.OnAnomaly(a)
	}
	return nil
}

// NewAnomaly builds the anomaly record of finding f on reading h.
func NewAnomaly(h messages.Heartbeat, f rules.Finding, detectedAt time.Time) (messages.Anomaly, error) {
	details := map[string]any{"threshold": f.Threshold, "measured": f.HeartRate}
	if f.Previous != nil {
		details["previous_heart_rate"] = *f.Previous
		details["delta"] = f.Delta()
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return messages.Anomaly{}, err
	}
	return messages.Anomaly{
		AnomalyID:         messages.AnomalyID(h.EventID, f.Rule),
		EventID:           h.EventID,
		CustomerID:        h.CustomerID,
		Type:              f.Rule,
		Severity:          f.Severity,
		HeartRate:         f.HeartRate,
		PreviousHeartRate: f.Previous,
		EventTime:         h.Timestamp.UTC(),
		DetectedAt:        detectedAt.UTC(),
		Details:           raw,
	}, nil
}

func (d *Detect) restore(ctx context.Context, h messages.Heartbeat, src messages.Source, ok bool) error {
	if !ok || src.Offset < 0 {
		return nil
	}
	at, rate, found, err := d.History.Previous(ctx, h, src)
	outcome := "found"
	switch {
	case historyIncomplete(d.Logger, h.CustomerID, err):
		// Go on without history: a SPIKE across this point may be missed.
		outcome = "incomplete"
	case err != nil:
		return err
	case found:
		d.Engine.Seed(h.CustomerID, at, rate)
	default:
		outcome = "none"
	}
	if d.OnHistory != nil {
		d.OnHistory(outcome)
	}
	return nil
}

// EpisodeStore records episode openings and closings with their outgoing
// messages atomically, and reloads a customer's recent episodes.
type EpisodeStore interface {
	WriteEpisodes(ctx context.Context, ws []hbsql.EpisodeWrite) (written []bool, err error)
	RecentEpisodes(ctx context.Context, customer string, since time.Time) ([]messages.Episode, error)
}

// EpisodeHistory reads a customer's stored readings: prime, its latest
// before warmFrom, and those from warmFrom on, in the partition's order,
// all from records of src's partition before src.
type EpisodeHistory interface {
	Readings(ctx context.Context, h messages.Heartbeat, src messages.Source, warmFrom time.Time) (prime *messages.Reading, rs []messages.Reading, err error)
}

// DetectEpisodes is the detector of DETECTION_MODE=episode: it validates
// readings as Persist does and evaluates the valid ones against the episode
// rules ([rules.EpisodeEngine]). Each episode is one anomalies row, inserted
// when it opens, updated when a SPIKE becomes a SUSTAINED episode and when
// it closes; each of those is published on events.anomaly.v1 through the
// outbox, in the transaction that changes the row. The state moves on only
// after it commits.
//
// After a restart, a rebalance or an eviction, a customer's state is
// rebuilt before its first reading is evaluated: its open and recently
// ended episodes from the anomalies table, then its stored readings
// replayed through the same rules (see [rules.EpisodeParams.Recall]).
type DetectEpisodes struct {
	Limits messages.Limits
	Engine *rules.EpisodeEngine
	Store  EpisodeStore
	// History, when set, rebuilds the state of a customer the engine does
	// not know.
	History      EpisodeHistory
	AnomalyTopic string
	Now          func() time.Time
	// OnAnomaly is called for each newly recorded opening (metrics).
	OnAnomaly func(a messages.Anomaly)
	// OnHistory is called after each rebuild with its outcome.
	OnHistory func(outcome string)
	Logger    *slog.Logger
}

// Handle implements message.NoPublishHandlerFunc.
func (d *DetectEpisodes) Handle(msg *message.Message) error { return d.handle(messageInput(msg)) }

// HandleRecord handles one record of a batch message, as Handle its message.
func (d *DetectEpisodes) HandleRecord(ctx context.Context, r *messages.Record, newID func() string) error {
	return d.handle(recordInput(ctx, r, newID))
}

func (d *DetectEpisodes) handle(in input) error {
	ws, apply, err := d.evaluate(in, d.Now(), nil)
	if err != nil || apply == nil {
		return err
	}
	if len(ws) > 0 {
		if err := d.record(in.ctx, ws); err != nil {
			return err
		}
	}
	apply()
	return nil
}

// HandleBatch handles the records of b not done, in order, recording all
// their episode changes in one transaction at the end, instead of one per
// change. Each reading's state is applied as it is evaluated, ahead of that
// write; if anything fails, the partition's state is dropped
// (ForgetPartition) and rebuilt from storage when the batch, or its records
// one by one, come again — as after a restart, with nothing of the batch
// recorded.
func (d *DetectEpisodes) HandleBatch(ctx context.Context, b *messages.Batch, newID func() string) (err error) {
	if b.Done >= len(b.Records) {
		return nil
	}
	partition := b.Records[b.Done].Source.Partition
	defer func() {
		if err != nil {
			d.Engine.ForgetPartition(partition)
		}
	}()
	now := d.Now()
	var ws []hbsql.EpisodeWrite
	for i := b.Done; i < len(b.Records); i++ {
		var apply func()
		if ws, apply, err = d.evaluate(recordInput(ctx, &b.Records[i], newID), now, ws); err != nil {
			return err
		}
		if apply != nil {
			apply()
		}
	}
	if len(ws) > 0 {
		if err := d.record(ctx, ws); err != nil {
			return err
		}
	}
	b.Done = len(b.Records)
	return nil
}

// evaluate validates in's reading, rebuilds its customer's state if the
// engine does not know it, evaluates it, and appends the writes of the
// episode changes it makes to ws. apply moves the state past the reading;
// it is nil for a reading not evaluated (invalid: persist routes it).
func (d *DetectEpisodes) evaluate(in input, now time.Time, ws []hbsql.EpisodeWrite) (_ []hbsql.EpisodeWrite, apply func(), _ error) {
	h, ok, err := validReading(d.Limits, in.payload, now)
	if !ok {
		return ws, nil, err
	}
	src := in.src
	if !d.Engine.Known(src.Partition, h.CustomerID) && d.History != nil && in.hasSrc && src.Offset >= 0 {
		if err := d.restore(in.ctx, h, src); err != nil {
			return ws, nil, err
		}
	}
	changes, apply := d.Engine.Evaluate(src.Partition, h, now)
	for _, c := range changes {
		w, err := d.episodeWrite(c, now, in.correlationID())
		if err != nil {
			return ws, nil, err
		}
		ws = append(ws, w)
	}
	return ws, apply, nil
}

// record writes ws in one transaction and reports the openings it
// recorded: a reclassification is the same alert, not a new anomaly.
func (d *DetectEpisodes) record(ctx context.Context, ws []hbsql.EpisodeWrite) error {
	written, err := d.Store.WriteEpisodes(ctx, ws)
	if err != nil {
		return err
	}
	for i, w := range ws {
		if written[i] && w.Row.Status == hbsql.EpisodeOpen && w.Row.ReclassifiedFrom == "" && d.OnAnomaly != nil {
			d.OnAnomaly(w.Row.Anomaly)
		}
	}
	return nil
}

func (d *DetectEpisodes) episodeWrite(c rules.Change, now time.Time, corr string) (hbsql.EpisodeWrite, error) {
	row, err := NewEpisodeRow(c, d.Engine.Params(), now)
	if err != nil {
		return hbsql.EpisodeWrite{}, err
	}
	body, err := json.Marshal(messages.EpisodeAnomaly{Anomaly: row.Anomaly, Status: row.Status, ReclassifiedFrom: c.Episode.OpenedAs, StartedAt: row.StartedAt,
		OpenedAt: row.OpenedAt, EndedAt: row.EndedAt, PeakRate: row.PeakRate, TroughRate: row.TroughRate,
		Samples: row.Samples, DurationMS: row.DurationMS})
	if err != nil {
		return hbsql.EpisodeWrite{}, err
	}
	id := row.AnomalyID
	switch {
	case row.Status == hbsql.EpisodeClosed:
		id = messages.AnomalyID(row.AnomalyID, "closed")
	case row.ReclassifiedFrom != "":
		// A SPIKE is reclassified at most once.
		id = messages.AnomalyID(row.AnomalyID, "reclassified")
	}
	out := anomalyMessage(id, body, corr, row.CustomerID, row.Type)
	out.Metadata.Set("anomaly_status", row.Status)
	return hbsql.EpisodeWrite{Row: row, Topic: d.AnomalyTopic, Msg: out}, nil
}

// NewEpisodeRow is the anomalies row of change c, detected at detectedAt.
func NewEpisodeRow(c rules.Change, p rules.EpisodeParams, detectedAt time.Time) (hbsql.EpisodeRow, error) {
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
	row := hbsql.EpisodeRow{
		Status: hbsql.EpisodeOpen, StartedAt: ep.Start.Time.UTC(), OpenedAt: ep.OpenedAt.UTC(),
		PeakRate: ep.Peak, TroughRate: ep.Trough, Samples: ep.Samples, DurationMS: ep.Duration().Milliseconds(),
	}
	switch c.Kind {
	case rules.Reclassified:
		// Merged into the opening's details: the SPIKE's jump stays.
		row.ReclassifiedFrom = ep.OpenedAs
		details["reclassified_from"] = ep.OpenedAs
		details["reclassified_at"] = ep.Reclassified.Time.UTC()
		details["reclassified_event_id"] = ep.Reclassified.EventID
		details["reclassified_heart_rate"] = ep.Reclassified.Rate
		delete(details, "opened_event_id")
		delete(details, "opened_heart_rate")
	case rules.Closed:
		details = map[string]any{"close_reason": ep.CloseReason}
		end := ep.End.UTC()
		row.Status, row.EndedAt = hbsql.EpisodeClosed, &end
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return hbsql.EpisodeRow{}, err
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

func (d *DetectEpisodes) restore(ctx context.Context, h messages.Heartbeat, src messages.Source) error {
	p := d.Engine.Params()
	recent, warmFrom, fullFrom, err := p.Recall(h.Timestamp, func(since time.Time) ([]messages.Episode, error) {
		return d.Store.RecentEpisodes(ctx, h.CustomerID, since)
	})
	if err != nil {
		return err
	}
	prime, readings, err := d.History.Readings(ctx, h, src, warmFrom)
	outcome := "found"
	switch {
	case historyIncomplete(d.Logger, h.CustomerID, err):
		// Go on from the recorded episodes alone; pending timers start again.
		outcome = "incomplete"
		prime, readings = nil, nil
	case err != nil:
		return err
	case prime == nil && len(readings) == 0:
		outcome = "none"
	}
	open := d.Engine.Restore(src.Partition, h.CustomerID, prime, readings, fullFrom, recent)
	if d.Logger != nil && outcome != "incomplete" {
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
			d.Logger.Warn("episodes recorded open were not rebuilt from the stored readings; they stay open until a reading closes them",
				"customer_id", h.CustomerID, "episodes", len(want))
		}
	}
	if d.OnHistory != nil {
		d.OnHistory(outcome)
	}
	return nil
}

// historyIncomplete reports, and logs, an error saying persist has not
// stored a customer's earlier readings (it is not running or far behind):
// the detectors then go on without them rather than stall detection.
func historyIncomplete(log *slog.Logger, customer string, err error) bool {
	if !errors.Is(err, hbsql.ErrHistoryIncomplete) {
		return false
	}
	if log != nil {
		log.Warn("detector state not rebuilt: persist has not stored the earlier readings", "customer_id", customer, "err", err)
	}
	return true
}

// validReading is both detectors' validation: ok is false for a reading to
// ack without evaluation (invalid: persist routes it, and a sensor fault must
// not also raise a clinical alarm) and for an unexpected error, returned.
func validReading(l messages.Limits, payload []byte, now time.Time) (messages.Heartbeat, bool, error) {
	h, err := l.Validate(payload, now)
	if err != nil {
		if _, invalid := messages.AsValidationError(err); invalid {
			return h, false, nil
		}
		return h, false, err
	}
	return h, true, nil
}

// anomalyMessage is an events.anomaly.v1 message keyed by customer, with
// the correlation id of the reading it derives from.
func anomalyMessage(id string, body []byte, corr string, customer, typ string) *message.Message {
	out := message.NewMessage(id, body)
	out.Metadata.Set(wmmw.CorrelationIDMetadataKey, corr)
	out.Metadata.Set(messages.KeyMetadata, customer)
	out.Metadata.Set("anomaly_type", typ)
	return out
}

// input is one reading to evaluate: a message's, or a batch record's
// without making it a message.
type input struct {
	ctx     context.Context
	payload []byte
	src     messages.Source
	hasSrc  bool
	msg     *message.Message // or
	rec     *messages.Record
	newID   func() string
}

func messageInput(msg *message.Message) input {
	src, ok := messages.SourceFromContext(msg.Context())
	return input{ctx: msg.Context(), payload: msg.Payload, src: src, hasSrc: ok, msg: msg}
}

func recordInput(ctx context.Context, r *messages.Record, newID func() string) input {
	return input{ctx: ctx, payload: r.Value, src: r.Source, hasSrc: true, rec: r, newID: newID}
}

// correlationID is the reading's correlation id: its message's, or its
// record's header, or a new one for a record produced without.
func (in *input) correlationID() string {
	if in.msg != nil {
		return wmmw.MessageCorrelationID(in.msg)
	}
	return recordCorrelationID(in.rec, in.newID)
}
