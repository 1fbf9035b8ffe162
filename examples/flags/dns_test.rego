package flags.dns_test

import data.flags.dns

test_the_platform_team_gets_it if dns.new_resolver with input as {"team": "platform"}

test_the_canary_cohort_in_eu_west_1_gets_it if {
	dns.new_resolver with input as {"team": "payments", "region": "eu-west-1", "cohort": "canary"}
}

test_others_do_not if not dns.new_resolver with input as {"team": "payments", "region": "us-east-1"}
