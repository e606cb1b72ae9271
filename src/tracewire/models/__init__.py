"""models layer of tracewire."""
