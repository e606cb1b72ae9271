"""replacement layer of tracewire."""
