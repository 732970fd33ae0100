"""Built-in architectures, each a plugin written exactly as a third party would write one."""
