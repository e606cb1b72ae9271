"""transcoders layer of tracewire."""
