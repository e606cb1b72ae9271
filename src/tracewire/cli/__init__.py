"""cli layer of tracewire."""
