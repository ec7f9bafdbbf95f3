"""Reports: tables, figure grids and plots rendered from the results store and run directories."""
