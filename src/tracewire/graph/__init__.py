"""graph layer of tracewire."""
