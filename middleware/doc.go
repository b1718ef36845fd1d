// Package middleware holds the router middleware Watermill does not ship,
// each a message.HandlerMiddleware in the shape of Watermill's own
// (github.com/ThreeDotsLabs/watermill/message/router/middleware):
// invalid-event routing ([InvalidEvents]), waiting out infrastructure
// outages instead of poisoning messages ([Backpressure]), splitting a failed
// batch message into its records ([SplitBatches]), correlation ids for
// messages from outside producers ([CorrelationID]), counting readings
// consumed ([Consumed]) and messages poisoned ([PoisonCounter]), and keeping
// poisoned messages under the broker's size limit ([BoundedPublisher]).
package middleware
