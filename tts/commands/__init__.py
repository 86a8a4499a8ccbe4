"""The `tts` commands, one module each, imported by `tts.cli` only when its command is the one
parsed. `add_arguments(parser)` adds the command's flags, which `tts.commands.config_flags`
generates from its pydantic config, and sets the function that runs it."""
