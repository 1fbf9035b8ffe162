package flags.builds

max_parallel := 16 if {
	input.team == "platform"
} else := 8 if {
	input.tier == "premium"
}
