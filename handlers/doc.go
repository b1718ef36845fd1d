// Package handlers holds the router's handlers: Persist (validate, then
// store in batches) and Detect (validate, then raise anomalies). Each is a
// small struct holding its dependencies; its Handle method is a Watermill
// NoPublishHandlerFunc. Returning nil acks the message, an error nacks it;
// a *messages.ValidationError is routed to the invalid topic by middleware.
package handlers
