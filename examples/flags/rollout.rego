package flags.rollout

canary_weight := 0.25 if input.region == "eu-west-1"
