"""Self-hosted Discord bot: /imagine runs FLUX.1 Kontext [pro] on WaveSpeed AI."""
