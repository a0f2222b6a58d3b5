"""`python -m rpistream.config`: print config.example.toml."""

from rpistream.config.example import example_config

print(example_config(), end="")
