// Package middleware holds the router middleware Watermill does not ship:
// invalid-event routing, waiting out infrastructure outages instead of
// poisoning messages, source coordinates and correlation ids on consumed
// messages. Each is a message.HandlerMiddleware in the shape of
// Watermill's own (github.com/ThreeDotsLabs/watermill/message/router/middleware).
package middleware
