/* a header of transport/ */
