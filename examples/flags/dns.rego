package flags.dns

# The platform team everywhere, and eu-west-1 services in the canary cohort.
new_resolver if input.team == "platform"

new_resolver if {
	input.region == "eu-west-1"
	input.cohort == "canary"
}
