"""attribution layer of tracewire."""
