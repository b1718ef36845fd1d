package messages

// Metadata keys set on Watermill messages. Kafka carries them as headers.
const (
	// KeyMetadata holds the Kafka record key: the customer id, so that one
	// customer's events stay in order on one partition.
	KeyMetadata = "partition_key"
	// CorrelationIDMetadata is Watermill's correlation id key, kept end to end.
	CorrelationIDMetadata = "correlation_id"
)
