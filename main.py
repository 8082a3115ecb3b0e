"""ssl-jax's command line in a clone: `python main.py [--config=...] [--mode=...]`.

The flags, the modes and their examples are in ssl_jax/cli.py (`python main.py --help`); where
the package is installed the same command is `ssl-jax`.
"""

from ssl_jax import cli

if __name__ == "__main__":
  cli.run()
