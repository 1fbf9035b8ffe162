package flags.logging

level := "debug" if input.environment == "staging"

level := "warn" if input.environment == "production"
