/* a header of tools/ */
