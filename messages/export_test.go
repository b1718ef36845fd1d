package messages

// DecodeReference exposes the reference decoder to the messages_test
// package, whose validation table seeds the differential tests.
var DecodeReference = decodeSlow
